package nbd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
)

// testPKI writes a CA, a server certificate for localhost/127.0.0.1 and a
// client certificate. The server dir has the names nbdkit expects; the
// client dir the names tls-certificates= expects.
func testPKI(t testing.TB) (serverDir, clientDir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	writePEM := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey := func(path string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(path, "PRIVATE KEY", der)
	}
	caKey, srvKey, cliKey := newKey(), newKey(), newKey()
	ca := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "mpathfs test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, nil, caKey, nil)
	srv := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, srvKey, caKey)
	cli := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "mpathfs client"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, cliKey, caKey)
	serverDir, clientDir = t.TempDir(), t.TempDir()
	writePEM(filepath.Join(serverDir, "ca-cert.pem"), "CERTIFICATE", ca.Raw)
	writePEM(filepath.Join(serverDir, "server-cert.pem"), "CERTIFICATE", srv.Raw)
	writeKey(filepath.Join(serverDir, "server-key.pem"), srvKey)
	writePEM(filepath.Join(clientDir, "ca-cert.pem"), "CERTIFICATE", ca.Raw)
	writePEM(filepath.Join(clientDir, "client-cert.pem"), "CERTIFICATE", cli.Raw)
	writeKey(filepath.Join(clientDir, "client-key.pem"), cliKey)
	return serverDir, clientDir
}

func TestTLS(t *testing.T) {
	serverDir, clientDir := testPKI(t)
	tlsArgs := []string{"--tls=require", "--tls-certificates=" + serverDir, "--tls-verify-peer"}
	t.Run("Conformance", func(t *testing.T) {
		backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
			s := startNbdkit(t, true, append(tlsArgs, "memory", fmt.Sprintf("size=%d", size))...)
			c := openT(t, fmt.Sprintf("nbds://127.0.0.1:%d/?tls-certificates=%s", s.port, clientDir))
			if !c.info.Load().tls {
				t.Fatal("TLS not in use")
			}
			return c
		})
	})
	s := startNbdkit(t, false, append(tlsArgs, "memory", "size=1M")...)
	ctx := ctxTimeout(t, 10*time.Second)
	t.Run("UnixExplicitFiles", func(t *testing.T) {
		uri := fmt.Sprintf("nbds+unix:///?socket=%s&tls-ca=%s&tls-cert=%s&tls-key=%s&tls-servername=localhost", s.sock,
			filepath.Join(clientDir, "ca-cert.pem"), filepath.Join(clientDir, "client-cert.pem"), filepath.Join(clientDir, "client-key.pem"))
		c := openT(t, uri)
		defer c.Close()
		if _, err := c.WriteAt(ctx, []byte(strings.Repeat("x", 4096)), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("PlainToTLSServer", func(t *testing.T) {
		_, err := backends.Open(ctx, s.uri(""))
		if err == nil || !strings.Contains(err.Error(), "requires TLS") {
			t.Fatalf("plain connection to a TLS-only server: %v", err)
		}
		t.Log(err)
	})
	t.Run("WrongCA", func(t *testing.T) {
		_, otherClient := testPKI(t)
		_, err := backends.Open(ctx, fmt.Sprintf("nbds+unix:///?socket=%s&tls-certificates=%s", s.sock, otherClient))
		if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
			t.Fatalf("TLS with an unknown CA: %v", err)
		}
		t.Log(err)
	})
	t.Run("NoClientCert", func(t *testing.T) {
		c, err := backends.Open(ctx, fmt.Sprintf("nbds+unix:///?socket=%s&tls-ca=%s", s.sock, filepath.Join(clientDir, "ca-cert.pem")))
		if err == nil {
			// TLS 1.3 reports a rejected client certificate on first use.
			_, err = c.ReadAt(ctx, make([]byte, 512), 0)
			c.Close()
		}
		if err == nil {
			t.Fatal("a server with --tls-verify-peer accepted a client without a certificate")
		}
		t.Log(err)
	})
	t.Run("TLSToPlainServer", func(t *testing.T) {
		p := startNbdkit(t, false, "memory", "size=1M")
		_, err := backends.Open(context.Background(), fmt.Sprintf("nbds+unix:///?socket=%s&tls-certificates=%s", p.sock, clientDir))
		if err == nil || !strings.Contains(err.Error(), "refused TLS") {
			t.Fatalf("TLS to a plain server: %v", err)
		}
		t.Log(err)
	})
}
