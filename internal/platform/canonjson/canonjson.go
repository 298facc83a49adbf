// Package canonjson writes a JSON value in one form whatever its text: two
// texts of the same value (other whitespace, key order or escapes) give the
// same bytes. The api fingerprints request bodies with it, and the
// consumer compares a message's data with the stored event's.
package canonjson

import (
	"bytes"
	"encoding/json"
)

// Of is raw decoded and encoded again: object keys sorted, no whitespace,
// escapes resolved, numbers as their literal text (1.0 stays apart from 1).
func Of(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}
