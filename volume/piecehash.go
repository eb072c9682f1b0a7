package volume

import (
	"crypto/sha256"
	"hash"
	"sync"
)

// pieceHashes hashes a data volume's pieces as the archive's bytes arrive,
// when they arrive in order, as a blob's do: most pieces are then hashed
// while the pull waits on the network, and need not be read back. A piece
// written out of order, or twice, is left for Commit to read back.
type pieceHashes struct {
	piece  int64 // the piece size
	size   int64 // the payload's size
	pieces []pieceHash
}

// pieceHash is a piece being hashed in order. Each has its own lock: the
// writers of different blobs rarely share a piece.
type pieceHash struct {
	mu    sync.Mutex
	h     hash.Hash // nil before the first byte and once done
	next  int64     // how many of its bytes are hashed
	sum   [sha256.Size]byte
	done  bool // sum holds its hash
	stray bool // written out of order: read it back
}

func newPieceHashes(piece, size int64) *pieceHashes {
	return &pieceHashes{piece: piece, size: size, pieces: make([]pieceHash, (size+piece-1)/piece)}
}

// wrote hashes p, written at off in the payload.
func (ph *pieceHashes) wrote(p []byte, off int64) {
	for len(p) > 0 {
		j := off / ph.piece
		at := off - j*ph.piece
		n := min(int64(len(p)), ph.piece-at)
		c := &ph.pieces[j]
		c.mu.Lock()
		switch {
		case c.stray:
		case c.done || at != c.next:
			c.stray, c.done, c.h = true, false, nil
		default:
			if c.h == nil {
				c.h = sha256.New()
			}
			c.h.Write(p[:n])
			c.next += n
			if c.next == min(ph.piece, ph.size-j*ph.piece) {
				c.h.Sum(c.sum[:0])
				c.done, c.h = true, nil
			}
		}
		c.mu.Unlock()
		p, off = p[n:], off+n
	}
}

// sum returns piece j's hash, when it was hashed in order.
func (ph *pieceHashes) sum(j int) ([sha256.Size]byte, bool) {
	c := &ph.pieces[j]
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sum, c.done
}
