package cuda

import "runtime"

// worker runs every CUDA driver and cuBLAS call of a Backend on one OS
// thread.
//
// Why one thread: the driver's current context is per thread, and cuBLAS
// and the stream-capture rules (a capture in global mode forbids some calls
// on other threads) are simplest to reason about when one thread owns them.
// Goroutines move between threads, so the backend does not call the driver
// from the caller's goroutine; it sends closures to a goroutine that locked
// its thread with runtime.LockOSThread, made the primary context current
// once, and runs them in order. Locking the caller's thread instead would
// impose LockOSThread on every user of the backend and break as soon as a
// second goroutine called it.
//
// Kernel launches and other stream-ordered work are posted without waiting
// (the caller only pays a channel send; the GPU runs them in posting order
// on the backend's one stream), and their errors are recorded for Sync.
// Work whose result the caller needs (allocation on a cache miss, copies to
// the host, Sync) waits for its closure.
type worker struct {
	ops  chan func()
	done chan struct{}
}

func startWorker() *worker {
	w := &worker{ops: make(chan func(), 1024), done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *worker) loop() {
	// Never unlocked: when the goroutine ends, its thread (and whatever
	// thread-local state the driver kept on it) ends too.
	runtime.LockOSThread()
	defer close(w.done)
	for f := range w.ops {
		f()
	}
}

// post queues f without waiting for it.
func (w *worker) post(f func()) { w.ops <- f }

// do runs f on the worker thread and returns its error.
func (w *worker) do(f func() error) error {
	res := make(chan error, 1)
	w.ops <- func() { res <- f() }
	return <-res
}

// stop ends the worker after the queued work.
func (w *worker) stop() {
	close(w.ops)
	<-w.done
}
