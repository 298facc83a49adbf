package e2ekit

import (
	"fmt"
	"strings"
	"time"
)

// LogTally sums up a process's log lines by a key the caller makes of
// each (its level and message, say): how often, first and last, in the
// order the keys first came.
type LogTally struct {
	order []*tallied
	byKey map[string]*tallied
}

type tallied struct {
	key         string
	n           int
	first, last time.Time
}

// Add counts a line of key logged at at.
func (l *LogTally) Add(key string, at time.Time) {
	e := l.byKey[key]
	if e == nil {
		if l.byKey == nil {
			l.byKey = map[string]*tallied{}
		}
		e = &tallied{key: key, first: at}
		l.byKey[key] = e
		l.order = append(l.order, e)
	}
	e.n++
	e.last = at
}

// String writes the tally under name, a key a line, its times in seconds
// since since.
func (l *LogTally) String(name string, since time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", name)
	for _, e := range l.order {
		fmt.Fprintf(&b, "\n  %4d× %6.1fs..%6.1fs %s", e.n, e.first.Sub(since).Seconds(), e.last.Sub(since).Seconds(), e.key)
	}
	return b.String()
}
