package scsi

import "context"

// Status is a SCSI status byte (SAM-5).
type Status uint8

// The SCSI status codes a logical unit returns.
const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

// Nexus names the I_T nexus a command arrived on: the initiator port (an
// iSCSI initiator name plus its ISID) and the target port (relative target
// port identifier and its target port group). Persistent reservations,
// SCSI-2 reservations and unit attentions are kept per nexus.
type Nexus struct {
	// Initiator is the initiator's name (iSCSI: its IQN or EUI).
	Initiator string
	// ISID is the initiator session identifier (iSCSI: 6 bytes, printed as
	// 12 hex digits). Initiator + ",i,0x" + ISID is the initiator port name.
	ISID string
	// TargetPort is the relative target port identifier (VPD 0x83).
	TargetPort uint16
	// TPG is the target port group the port belongs to.
	TPG uint16
}

// InitiatorPort returns the SCSI initiator port name, as SPC-4 and RFC 7143
// spell it: NAME,i,0xISID.
func (n Nexus) InitiatorPort() string { return n.Initiator + ",i,0x" + n.ISID }

// TaskAttr is a task attribute (SAM-5).
type TaskAttr uint8

// Task attributes.
const (
	TaskSimple TaskAttr = iota
	TaskOrdered
	TaskHeadOfQueue
	TaskACA
)

// Command is one SCSI command as a transport hands it to a logical unit:
// the whole data-out buffer has arrived before Execute is called.
type Command struct {
	Nexus Nexus
	LUN   uint64
	CDB   []byte
	// DataOut is the data the initiator sent (writes, parameter lists);
	// nil when the command carries none.
	DataOut []byte
	// DataInLen is the initiator's expected data-in transfer length (the
	// buffer it offers); a logical unit never returns more than this.
	DataInLen int
	// Tag is the transport's task tag (iSCSI: the initiator task tag).
	Tag  uint64
	Attr TaskAttr
}

// Response is a logical unit's answer to one command.
type Response struct {
	Status Status
	// Sense is fixed-format sense data (SPC-4 4.5.3) when Status is CHECK
	// CONDITION; nil otherwise.
	Sense []byte
	// DataIn is the data to return (at most Command.DataInLen bytes; the
	// transport computes residuals from the difference).
	DataIn []byte
}

// TMF is a task management function (SAM-5).
type TMF uint8

// Task management functions.
const (
	TMFAbortTask TMF = iota + 1
	TMFAbortTaskSet
	TMFClearTaskSet
	TMFLUNReset
	TMFTargetWarmReset
	TMFTargetColdReset
	TMFITNexusReset
)

// Handler executes SCSI commands for the logical units behind one target.
// A transport (the iSCSI target) owns the task set: it calls Execute once a
// command's data-out is complete, and implements ABORT TASK / ABORT TASK SET
// by cancelling the command's context and waiting for Execute to return
// before it answers the task management request. Execute therefore must not
// begin any side effect (a write to the medium, a reservation change) once
// ctx is done; a side effect already begun finishes before Execute returns.
// That is the guarantee fencing relies on: once an abort is answered, the
// aborted command never executes afterwards.
type Handler interface {
	// LUNs lists the logical units the nexus may see (REPORT LUNS, and the
	// check that a command's LUN exists).
	LUNs(n Nexus) []uint64
	// Execute runs one command and returns its response. It is called
	// concurrently for different commands.
	Execute(ctx context.Context, cmd *Command) Response
	// Reset tells the logical units about a task management function that
	// affects their state beyond aborting tasks: LUN RESET, TARGET WARM/COLD
	// RESET and I_T NEXUS RESET (SCSI-2 reservations released, unit
	// attentions established). The transport has already aborted (and
	// waited for) the affected tasks. lun is ignored for target resets.
	Reset(n Nexus, f TMF, lun uint64)
	// NexusLost reports that an I_T nexus ended (the iSCSI session closed,
	// failed or was reinstated): release what only that nexus held.
	NexusLost(n Nexus)
}
