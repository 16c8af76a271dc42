// Package alua holds the SATPs of arrays with asymmetric access:
// VMW_SATP_ALUA (target port groups learnt by Report Target Port Groups,
// activated by Set Target Port Groups) and VMW_SATP_DEFAULT_AP
// (active/passive arrays, a vendor-specific trespass). The ALUA vocabulary
// they speak (states, TPG descriptors, the Reporter, Setter and Trespasser
// capabilities) is in package scsi; the simulated array they are tested
// against is package array.
package alua
