package integrity

// Detached reports whether the decorated device is detached (switched off
// or dead: it refuses I/O), for the FUSE face, which refuses to open the
// file of a detached device.
func (o *Oracle) Detached() bool {
	d, ok := o.dev.(interface{ Detached() bool })
	return ok && d.Detached()
}
