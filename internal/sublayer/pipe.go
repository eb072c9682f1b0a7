package sublayer

import (
	"errors"
	"io"
	"sync"
)

// Sizes of the buffers that carry a stream from one goroutine to another:
// enough in flight that neither side waits on the other's bursts, little
// enough that memory does not grow with the layer.
const (
	pipeChunk = 128 << 10
	pipeDepth = 4
)

// errPipeClosed is what a pipe's writer gets once the reader has stopped.
var errPipeClosed = errors.New("sublayer: pipe reader stopped")

// chunkPipe carries a byte stream from one goroutine to another in a fixed
// number of reused buffers, so that the two sides run on separate cores
// with bounded memory. One goroutine writes (Write, ReadFrom, closeWrite),
// another reads (next, release) until the stream ends or it calls stop.
type chunkPipe struct {
	full chan []byte
	free chan []byte
	done chan struct{}
	once sync.Once
	cur  []byte
}

func newChunkPipe() *chunkPipe {
	p := &chunkPipe{
		full: make(chan []byte, pipeDepth),
		free: make(chan []byte, pipeDepth+1),
		done: make(chan struct{}),
	}
	for range pipeDepth + 1 {
		p.free <- nil // allocated on first use
	}
	return p
}

// take makes p.cur a buffer with room.
func (p *chunkPipe) take() error {
	if p.cur != nil {
		return nil
	}
	select {
	case c := <-p.free:
		if c == nil {
			c = make([]byte, 0, pipeChunk)
		}
		p.cur = c[:0]
		return nil
	case <-p.done:
		return errPipeClosed
	}
}

// send hands the current buffer to the reader.
func (p *chunkPipe) send() error {
	select {
	case p.full <- p.cur:
		p.cur = nil
		return nil
	case <-p.done:
		return errPipeClosed
	}
}

func (p *chunkPipe) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if err := p.take(); err != nil {
			return n - len(b), err
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+k]
		b = b[k:]
		if len(p.cur) == cap(p.cur) {
			if err := p.send(); err != nil {
				return n - len(b), err
			}
		}
	}
	return n, nil
}

// ReadFrom reads r into the pipe's buffers directly, so that io.Copy into
// the pipe needs no buffer of its own.
func (p *chunkPipe) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	for {
		if err := p.take(); err != nil {
			return n, err
		}
		k, err := r.Read(p.cur[len(p.cur):cap(p.cur)])
		p.cur = p.cur[:len(p.cur)+k]
		n += int64(k)
		if len(p.cur) == cap(p.cur) {
			if serr := p.send(); serr != nil {
				return n, serr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// closeWrite sends what is buffered and ends the stream.
func (p *chunkPipe) closeWrite() error {
	if len(p.cur) > 0 {
		if err := p.send(); err != nil {
			return err
		}
	}
	close(p.full)
	return nil
}

// next returns the next buffer, or false at the end of the stream or once
// stop was called. The reader must release each buffer it gets.
func (p *chunkPipe) next() ([]byte, bool) {
	select {
	case c, ok := <-p.full:
		return c, ok
	case <-p.done:
		return nil, false
	}
}

// release returns a buffer to the writer.
func (p *chunkPipe) release(c []byte) {
	p.free <- c[:0]
}

// stop ends the stream early: the writer's next call fails.
func (p *chunkPipe) stop() {
	p.once.Do(func() { close(p.done) })
}

// pipeReader reads a pipe's stream. It fails with errPipeClosed when the
// stream was stopped rather than ended.
type pipeReader struct {
	p    *chunkPipe
	held []byte // the buffer cur is in, released when read
	cur  []byte
}

func (r *pipeReader) Read(b []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.held != nil {
			r.p.release(r.held)
			r.held = nil
		}
		c, ok := r.p.next()
		if !ok {
			select {
			case <-r.p.done:
				return 0, errPipeClosed
			default:
				return 0, io.EOF
			}
		}
		r.held, r.cur = c, c
	}
	n := copy(b, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
