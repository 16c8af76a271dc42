// Package scenario runs replayable fault schedules against a running
// mpathfs: a small line-oriented language says what breaks when ("at 2s
// fail path vmhba1:C0:T0:L0 with path-failure for 3s"), Parse turns a file
// into a *Scenario, Expand turns that into a sorted timeline of Steps, and
// Run plays the timeline against a Target while it watches the event and
// trace streams and samples status, then reports per fault when it was
// injected, when the engine noticed, when I/O was good again elsewhere, the
// worst latency around it and the errors the application saw (Report, as
// Markdown and as an SVG plot of per-path IOPS).
//
// It is its own folder, outside the layers of docs/design.md, because it
// belongs to none of them: it drives the control API as a user would, over
// the control socket (ClientTarget, `mpathfs scenario run`) or in process
// over a *control.Runtime (RuntimeTarget, tests and `mpathfs mount
// --scenario`).
//
// # The language
//
// One statement per line; '#' starts a comment; blank lines are ignored.
// Times (TIME) are offsets from the start of the run and durations (DUR)
// are Go durations: 500ms, 2s, 1m30s. PATH is a path's name (its runtime
// name such as vmhba1:C0:T0:L0) or URI; DEV a device name.
//
//	seed N                         seed of every injected fault (default 1)
//	device DEV                     the device of device-scoped statements
//	                               (default: the target's only device)
//	end TIME                       keep running (and sampling) until TIME
//
//	at TIME ACTION                 do ACTION once
//	every DUR [from TIME] flap path PATH for DUR
//	                               alternately fail (path-failure) and
//	                               restore PATH each DUR, for DUR in all
//
// Actions:
//
//	fail path PATH with CLASS [FAULT-OPTIONS] [LIFETIME]
//	hang path PATH [FAULT-OPTIONS] [LIFETIME]
//	land-late path PATH DUR [FAULT-OPTIONS] [LIFETIME] writes time out, land DUR after issue
//	corrupt path PATH KIND [FAULT-OPTIONS] [LIFETIME] acknowledged, wrong data: KIND is
//	                                                  bitflip, misdirect, drop or torn
//	slow path PATH xN [FAULT-OPTIONS] [LIFETIME]      gray: slow, not dead
//	flap path PATH every DUR for DUR                  the same as every … flap
//	path PATH off | path PATH on                      administrative state
//	all-paths-down [device DEV] [LIFETIME]            fail every path of DEV
//	array ARRAY controller C fail | restore           ALUA (POST /v1/array)
//	array ARRAY transfer-ownership C
//	array ARRAY tpg N state STATE
//	policy DEV psp PSP [NAME=VALUE]...                change the PSP live
//	clear path PATH                                   clear every fault of PATH
//	reset lun|target|bus|abort-task-set path PATH     a reset issued on PATH: aborted tasks, unit attentions
//	device DEV off | device DEV on                    detach or attach a device by hand
//
// LIFETIME is "for DUR" or "until TIME"; without one a fault lasts until
// the end of the run (the runner clears what it injected). CLASS is an
// error class as ioerr.ParseClass reads it: path-failure, retryable,
// not-ready, device-error, permanent-loss. FAULT-OPTIONS are the flags of
// `mpathfs fault inject` (fault.ParseArgs), with or without their dashes:
//
//	op read,write        only these operations: the probe passes (gray failure)
//	probability 10%      fire with this chance, drawn from the fault's seed
//	range 0:1M           only I/O overlapping this byte range
//	every N, after N, count N, latency D, jitter D, slow N, sense KK/AA/QQ,
//	late, bandwidth RATE, seed N, silent (with land-late: no proof of the landing),
//	bits N (bitflip), misdirect-by SIZE (misdirect), torn-at SIZE (torn)
//
// Examples:
//
//	seed 42
//	at 2s fail path vmhba1:C0:T0:L0 with path-failure for 3s
//	at 2s fail path vmhba2:C0:T0:L0 with retryable probability 10% op read,write
//	every 500ms flap path vmhba3:C0:T0:L0 for 10s
//	at 5s hang path vmhba1:C0:T0:L0 until 8s
//	at 5s land-late path vmhba1:C0:T0:L0 2s op write for 3s
//	at 10s all-paths-down device lab for 2s
//	at 3s slow path vmhba2:C0:T0:L0 x5 for 4s
//	at 4s fail path vmhba1:C0:T0:L0 with path-failure op read,write
//	at 6s fail path vmhba1:C0:T0:L0 with device-error range 0:1M
//	at 7s path vmhba1:C0:T0:L0 off
//	at 9s path vmhba1:C0:T0:L0 on
//	at 12s array A controller B fail
//	at 13s array A transfer-ownership B
//	at 1s policy lab psp VMW_PSP_RR iops=1
//
// # Determinism
//
// Expand sorts the steps by time (statements at the same time keep their
// order in the file) and gives every injected fault the seed
// StepSeed(scenario seed, step index) unless its options name one, so the
// same file injects the same faults with the same random draws every time;
// with an in-process device, a scripted workload and testing/synctest the
// per-I/O trace in decisions mode is byte-identical from run to run.
package scenario
