// Package array is the simulated storage array: one LU behind controllers
// with target ports in target port groups, an owner, ALUA or active/passive
// access states, transitions and the interconnect penalty of non-optimized
// ports. Core is its pure state machine (events in, states out, no clock);
// Array feeds it time and serves hosts through its Ports, which are
// backends offering the scsi.Reporter, scsi.Setter and scsi.Trespasser
// capabilities and answering with the sense data a real array sends.
// It knows nothing of the host side (no SATP, no routing engine).
package array
