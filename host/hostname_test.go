package host

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWithInitiator(t *testing.T) {
	for _, tc := range []struct{ uri, host, want string }{
		{"iscsi://127.0.0.1:3260/iqn.2026-01.io.mpathfs:array/0", "a",
			"iscsi://127.0.0.1:3260/iqn.2026-01.io.mpathfs:array/0?initiator=iqn.2026-12.io.mpathfs%3Ahost.a"},
		{"iscsi://h/iqn.x:t/1?data_digest=crc32c", "Node_B",
			"iscsi://h/iqn.x:t/1?data_digest=crc32c&initiator=iqn.2026-12.io.mpathfs%3Ahost.node-b"},
		{"iscsi://h/iqn.x:t/1?initiator=iqn.1999-01.com.example:me", "a", "iscsi://h/iqn.x:t/1?initiator=iqn.1999-01.com.example:me"},
		{"nbd://127.0.0.1:10809/x", "a", "nbd://127.0.0.1:10809/x"},
		{"/tmp/store", "a", "/tmp/store"},
		{"iscsi://h/iqn.x:t/1", "", "iscsi://h/iqn.x:t/1"},
	} {
		assert.Equal(t, tc.want, WithInitiator(tc.uri, tc.host), "%s with host %q", tc.uri, tc.host)
	}
}

func TestCheckName(t *testing.T) {
	require.NoError(t, CheckName("esx-01.lab_a"))
	for _, bad := range []string{"", "a b", "a/b", "ü", string(make([]byte, 201))} {
		err := CheckName(bad)
		require.Error(t, err, "%q", bad)
		assert.Contains(t, err.Error(), "host name")
	}
	assert.NoError(t, CheckName(DefaultName()), "the default name is a valid name")
	assert.Equal(t, "iqn.2026-12.io.mpathfs:host.esx-01", InitiatorName("ESX_01"))
}
