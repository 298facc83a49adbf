package domain

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// DefaultContentType is a file's content type when none is given.
const DefaultContentType = "application/octet-stream"

// MaxTextLength is the longest name or content type, in characters.
const MaxTextLength = 255

// MaxJobFiles is the most files one job holds: its preview lists them all,
// so this bounds the preview.
const MaxJobFiles = 10000

// RuleError is input that breaks a rule; Field names the input.
type RuleError struct {
	Field   string
	Message string
}

func (e *RuleError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Message) }

// CheckName enforces the name rule: 1 to 255 characters, none a control
// character.
func CheckName(field, name string) error {
	n := utf8.RuneCountInString(name)
	if n == 0 {
		return &RuleError{field, "is required"}
	}
	if n > MaxTextLength {
		return &RuleError{field, fmt.Sprintf("must be at most %d characters", MaxTextLength)}
	}
	return checkText(field, name)
}

// ContentType applies the content type rule: empty means
// DefaultContentType; at most 255 characters, no control characters.
func ContentType(ct string) (string, error) {
	if ct == "" {
		return DefaultContentType, nil
	}
	if utf8.RuneCountInString(ct) > MaxTextLength {
		return "", &RuleError{"content_type", fmt.Sprintf("must be at most %d characters", MaxTextLength)}
	}
	return ct, checkText("content_type", ct)
}

// CheckSize enforces 0 ≤ size (an int64 is always below 2⁶³).
func CheckSize(size int64) error {
	if size < 0 {
		return &RuleError{"size_bytes", "must not be negative"}
	}
	return nil
}

func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return &RuleError{field, "must be valid UTF-8"}
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return &RuleError{field, "must not contain control characters"}
		}
	}
	return nil
}
