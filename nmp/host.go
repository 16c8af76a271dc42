package nmp

// UsablePaths is how many paths could carry I/O now (the current view's
// usable set): the host asks before it proves a new path's identity
// against one of them.
func (d *Device) UsablePaths() int { return len(d.View().Usable) }
