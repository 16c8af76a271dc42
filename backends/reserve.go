package backends

import (
	"context"

	"github.com/mpathfs/mpathfs/scsi"
)

// Reserver is implemented by backends that carry SCSI reservations to the
// logical unit on their own I_T nexus: PERSISTENT RESERVE OUT and IN
// (SPC-4) and the SCSI-2 RESERVE(6)/RELEASE(6). A key registered through
// one backend is registered for that nexus only: registering every path of
// a device is the multipath layer's job.
type Reserver interface {
	// PRRegister registers newKey for this nexus (oldKey is the key
	// registered now, 0 if none; newKey 0 unregisters). With
	// ignoreExisting the current key is not checked (REGISTER AND IGNORE
	// EXISTING KEY).
	PRRegister(ctx context.Context, oldKey, newKey uint64, ignoreExisting bool) error
	// PRReserve takes a reservation of type typ with the registered key.
	PRReserve(ctx context.Context, key uint64, typ scsi.PRType) error
	// PRRelease releases the reservation held with key.
	PRRelease(ctx context.Context, key uint64, typ scsi.PRType) error
	// PRClear removes every registration and the reservation.
	PRClear(ctx context.Context, key uint64) error
	// PRPreempt removes victim's registrations (and its reservation, taking
	// one of type typ); with abort the victim's tasks are aborted too.
	PRPreempt(ctx context.Context, key, victim uint64, typ scsi.PRType, abort bool) error
	// PRReadKeys returns the PR generation and the registered keys.
	PRReadKeys(ctx context.Context) (uint32, []uint64, error)
	// PRReadReservation returns the current reservation, if any.
	PRReadReservation(ctx context.Context) (PRReservation, error)
	// PRReadFullStatus returns every registration with its holder flag.
	PRReadFullStatus(ctx context.Context) (PRFullStatus, error)
	// PRCapabilities is REPORT CAPABILITIES.
	PRCapabilities(ctx context.Context) (PRCapabilities, error)
	// Reserve6 and Release6 are the SCSI-2 reservation of the whole LU for
	// this nexus.
	Reserve6(ctx context.Context) error
	Release6(ctx context.Context) error
}

// PRReservation is what READ RESERVATION reports.
type PRReservation struct {
	Generation uint32      `json:"generation"`
	Held       bool        `json:"held"`
	Key        uint64      `json:"key,omitempty"`
	Type       scsi.PRType `json:"type,omitempty"`
}

// PRRegistration is one descriptor of READ FULL STATUS.
type PRRegistration struct {
	Key uint64 `json:"key"`
	// Holder: this registration holds the reservation.
	Holder bool `json:"holder,omitempty"`
	// AllTargetPorts: the registration is for every target port.
	AllTargetPorts bool        `json:"all_target_ports,omitempty"`
	Type           scsi.PRType `json:"type,omitempty"` // when Holder
	// RelativeTargetPort is the target port the registration was made
	// through.
	RelativeTargetPort uint16 `json:"relative_target_port"`
	// Initiator is the initiator port's name from its TransportID (iSCSI:
	// the initiator name, with ",i,0x" and the ISID for format 1).
	Initiator string `json:"initiator,omitempty"`
}

// PRFullStatus is what READ FULL STATUS reports.
type PRFullStatus struct {
	Generation    uint32           `json:"generation"`
	Registrations []PRRegistration `json:"registrations"`
}

// PRCapabilities is what REPORT CAPABILITIES reports.
type PRCapabilities struct {
	// CRH: RESERVE of a reservation already held by this nexus is GOOD.
	CRH bool `json:"crh"`
	// SIPC, ATPC: SPEC_I_PT and ALL_TG_PT are supported.
	SIPC bool `json:"sip_c"`
	ATPC bool `json:"atp_c"`
	// PTPLC: persist through power loss is supported; PTPLA: it is on.
	PTPLC bool `json:"ptpl_c"`
	PTPLA bool `json:"ptpl_a"`
	// Types are the reservation types the LU supports (when its type mask
	// is valid).
	Types []scsi.PRType `json:"types,omitempty"`
}
