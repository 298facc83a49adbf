package domain

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// DefaultContentType is a file's content type when none is given.
const DefaultContentType = "application/octet-stream"

// MaxTextLength is the longest name or content type, in characters.
const MaxTextLength = 255

// MaxJobFiles is the most files one job holds: its preview lists them all,
// so this bounds the preview.
const MaxJobFiles = 10000

// MaxDeadLetterID is the longest id of a dead letter, in characters: the
// bound of its column.
const MaxDeadLetterID = 255

// RuleError is input that breaks a rule: Field names the input, Message
// says what is wrong with it, and the error reads "<Field> <Message>"
// ("name must not contain control characters (found U+0000)"), the
// message the API answers with.
type RuleError struct {
	Field   string
	Message string
}

func (e *RuleError) Error() string { return e.Field + " " + e.Message }

// CheckName enforces the name rule: 1 to 255 characters, none a control
// character.
func CheckName(field, name string) error {
	if name == "" {
		return &RuleError{field, "is required and must not be empty"}
	}
	return checkText(field, name)
}

// ContentType applies the content type rule: empty means
// DefaultContentType; at most 255 characters, no control characters.
func ContentType(ct string) (string, error) {
	if ct == "" {
		return DefaultContentType, nil
	}
	return ct, checkText("content_type", ct)
}

// CheckSize enforces 0 ≤ size (an int64 is always below 2⁶³).
func CheckSize(size int64) error {
	if size < 0 {
		return negativeSize()
	}
	return nil
}

// ParseSize reads a size as the caller wrote it, in decimal digits (a JSON
// number without fraction or exponent; anything else is not an integer),
// and enforces 0 ≤ size < 2⁶³.
func ParseSize(s string) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, &RuleError{"size_bytes", "must be an integer, not " + Excerpt(s)}
	}
	if s[0] == '-' && strings.Trim(digits, "0") != "" {
		return 0, negativeSize()
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, &RuleError{"size_bytes", "must be less than 2^63"}
	}
	return n, nil
}

func negativeSize() error { return &RuleError{"size_bytes", "must not be negative"} }

// ParseID reads an id: a UUID in its canonical 36-character form.
func ParseID(field, s string) (uuid.UUID, error) {
	if len(s) == 36 {
		if id, err := uuid.Parse(s); err == nil {
			return id, nil
		}
	}
	return uuid.Nil, &RuleError{field, fmt.Sprintf("must be a UUID, not %q", Excerpt(s))}
}

// ParseFileIDs reads the files a job is to hold (file_ids): ids, none
// repeated, the first broken rule in the order given. Too many is not a
// broken rule but the job's limit (MaxJobFiles), which the command answers.
func ParseFileIDs(raw []string) ([]uuid.UUID, error) {
	ids := make([]uuid.UUID, len(raw))
	seen := distinct[uuid.UUID]{field: "file_ids"}
	for i, s := range raw {
		id, err := ParseID(fmt.Sprintf("file_ids[%d]", i), s)
		if err != nil {
			return nil, err
		}
		if err := seen.add(i, id); err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// CheckDeadLetterID enforces the rule of a dead letter's id as a caller
// names it: 1 to MaxDeadLetterID characters of UTF-8 text Postgres can
// hold (no NUL).
func CheckDeadLetterID(field, id string) error {
	switch {
	case !utf8.ValidString(id):
		return &RuleError{field, "is not valid UTF-8"}
	case id == "" || utf8.RuneCountInString(id) > MaxDeadLetterID:
		return &RuleError{field, fmt.Sprintf("must be 1 to %d characters", MaxDeadLetterID)}
	case strings.IndexByte(id, 0) >= 0:
		return &RuleError{field, "holds a NUL character"}
	}
	return nil
}

// CheckDeadLetterIDs checks a list of dead letters' ids (event_ids): each
// one's rule (CheckDeadLetterID), none repeated, the first broken rule in
// the order given.
func CheckDeadLetterIDs(ids []string) error {
	seen := distinct[string]{field: "event_ids"}
	for i, id := range ids {
		if err := CheckDeadLetterID(fmt.Sprintf("event_ids[%d]", i), id); err != nil {
			return err
		}
		if err := seen.add(i, id); err != nil {
			return err
		}
	}
	return nil
}

// distinct finds the element of a list (field) that repeats an earlier one.
type distinct[T comparable] struct {
	field string
	seen  map[T]int // index of each element's first place
}

// add takes element i, v; a RuleError when an earlier one was v too.
func (d *distinct[T]) add(i int, v T) error {
	if j, dup := d.seen[v]; dup {
		return &RuleError{fmt.Sprintf("%s[%d]", d.field, i), fmt.Sprintf("repeats %s[%d]", d.field, j)}
	}
	if d.seen == nil {
		d.seen = make(map[T]int)
	}
	d.seen[v] = i
	return nil
}

// Excerpt is the start of s, at most 40 bytes and then "…", for a message
// that quotes what the caller sent.
func Excerpt(s string) string {
	const n = 40
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// checkText enforces the rule of names and content types: valid UTF-8, at
// most MaxTextLength characters, no control characters (NUL included).
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return &RuleError{field, "must be valid UTF-8"}
	}
	if n := utf8.RuneCountInString(s); n > MaxTextLength {
		return &RuleError{field, fmt.Sprintf("must be at most %d characters, not %d", MaxTextLength, n)}
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return &RuleError{field, fmt.Sprintf("must not contain control characters (found U+%04X)", c)}
		}
	}
	return nil
}
