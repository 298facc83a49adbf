package subscribertest

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
)

// historyStart is the earliest time of a FileHistory.
var historyStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// FileHistory is the default history: the lives of one to eight files of
// one to three owners (each uploaded, about half of them deleted later)
// and of up to two jobs (created, maybe deleted), interleaved as commands
// would commit them. Sizes run from 0 to the largest int64; times advance
// by up to two hours in microseconds, and now and then not at all.
func FileHistory(r *rand.Rand) []eventstore.Event {
	owners := make([]uuid.UUID, 1+r.IntN(3))
	for i := range owners {
		owners[i] = newUUID(r)
	}
	type life struct {
		stream string
		id     uuid.UUID
		owner  uuid.UUID
		size   int64
		steps  int32 // events in its life
		done   int32 // events made so far
	}
	var lives []*life
	for range 1 + r.IntN(8) {
		lives = append(lives, &life{stream: domain.StreamFile, id: newUUID(r), owner: owners[r.IntN(len(owners))],
			size: size(r), steps: 1 + int32(r.IntN(2))})
	}
	for range r.IntN(3) {
		lives = append(lives, &life{stream: domain.StreamJob, id: newUUID(r), owner: owners[r.IntN(len(owners))], steps: 1 + int32(r.IntN(2))})
	}
	at := historyStart.Add(time.Duration(r.Int64N(365*24*3600*1e6)) * time.Microsecond)
	var out []eventstore.Event
	for len(lives) > 0 {
		k := r.IntN(len(lives))
		l := lives[k]
		l.done++
		var (
			typ  string
			data any
		)
		switch {
		case l.stream == domain.StreamFile && l.done == 1:
			typ, data = domain.FileUploaded, domain.FileUploadedData{OwnerID: l.owner, Name: "f", SizeBytes: l.size, ContentType: domain.DefaultContentType}
		case l.stream == domain.StreamFile:
			typ, data = domain.FileDeleted, domain.FileDeletedData{OwnerID: l.owner}
		case l.done == 1:
			typ, data = domain.JobCreated, domain.JobCreatedData{OwnerID: l.owner, Name: "j"}
		default:
			typ, data = domain.JobDeleted, domain.JobDeletedData{}
		}
		e, err := eventstore.New(l.stream, l.id, l.done, typ, data, at)
		if err != nil {
			panic(err) // the domain's data always encodes
		}
		out = append(out, e)
		if l.done == l.steps {
			lives = slices.Delete(lives, k, k+1)
		}
		if r.IntN(8) != 0 {
			at = at.Add(time.Duration(1+r.Int64N(2*3600*1e6)) * time.Microsecond)
		}
	}
	return out
}

// size is a file size: empty, small, large, or the largest there is.
func size(r *rand.Rand) int64 {
	switch r.IntN(5) {
	case 0:
		return 0
	case 1:
		return math.MaxInt64
	case 2:
		return r.Int64()
	default:
		return r.Int64N(1 << 20)
	}
}

// newUUID is a version 4 UUID drawn from r, so a seed replays the ids too.
func newUUID(r *rand.Rand) uuid.UUID {
	var u uuid.UUID
	binary.BigEndian.PutUint64(u[:8], r.Uint64())
	binary.BigEndian.PutUint64(u[8:], r.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// anyOrder is round n's plan for n events: the batches to deliver, each a
// list of indexes into the history (in position order). The first three
// rounds are the edge cases every run covers; the others are shuffled.
func anyOrder(r *rand.Rand, round, n int) [][]int {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	switch round {
	case 0: // all at once, in order, each once
		return [][]int{all}
	case 1: // one at a time, newest first: every delete before its upload
		plan := make([][]int, n)
		for i := range plan {
			plan[i] = []int{n - 1 - i}
		}
		return plan
	case 2: // all at once, each twice: duplicates within one batch
		twice := append(slices.Clone(all), all...)
		r.Shuffle(len(twice), func(i, j int) { twice[i], twice[j] = twice[j], twice[i] })
		return [][]int{twice}
	}
	return shuffled(r, all)
}

// shuffled is a plan of every event of idx once or more (about a third of
// them two or three times), in a random order, cut into batches at random
// points: duplicates fall within batches and across them.
func shuffled(r *rand.Rand, idx []int) [][]int {
	var seq []int
	for _, i := range idx {
		copies := 1
		if r.IntN(3) == 0 {
			copies += 1 + r.IntN(2)
		}
		for range copies {
			seq = append(seq, i)
		}
	}
	r.Shuffle(len(seq), func(i, j int) { seq[i], seq[j] = seq[j], seq[i] })
	return split(r, seq)
}

// split cuts seq into batches, after each element with a probability
// drawn for the whole plan: from nearly one batch to one per event.
func split(r *rand.Rand, seq []int) [][]int {
	cut := []float64{0.05, 0.2, 0.5, 1}[r.IntN(4)]
	var plan [][]int
	start := 0
	for i := range seq {
		if i == len(seq)-1 || r.Float64() < cut {
			plan = append(plan, seq[start:i+1])
			start = i + 1
		}
	}
	return plan
}

// commands cuts n events, in order, into the commands that appended them:
// one to three consecutive events each.
func commands(r *rand.Rand, n int) [][]int {
	var out [][]int
	for i := 0; i < n; {
		k := min(n-i, 1+r.IntN(3))
		cmd := make([]int, k)
		for j := range cmd {
			cmd[j] = i + j
		}
		out = append(out, cmd)
		i += k
	}
	return out
}
