package readmodel

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// ErrBadCursor: the cursor was not one this API handed out.
var ErrBadCursor = errors.New("cursor is not valid")

const cursorPrefix = "p:"

// String encodes the cursor as an opaque URL-safe token.
func (c Cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(c.After, 10)))
}

// ParseCursor reads a token from String; the empty token is the first page.
func ParseCursor(token string) (Cursor, error) {
	if token == "" {
		return Cursor{}, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	num, ok := strings.CutPrefix(string(raw), cursorPrefix)
	if !ok {
		return Cursor{}, ErrBadCursor
	}
	after, err := strconv.ParseInt(num, 10, 64)
	if err != nil || after <= 0 {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{After: after}, nil
}
