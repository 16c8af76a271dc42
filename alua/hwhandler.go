package alua

// HWHandler is the dm-multipath hardware handler that does what this
// SATP does: scsi_dh_alua.
func (s *aluaSATP) HWHandler() string { return "1 alua" }

// HWHandler names the active/passive SATP's trespass (dm-multipath's
// vendor handlers such as "1 emc" do the same for their arrays).
func (s *apSATP) HWHandler() string { return "1 ap" }
