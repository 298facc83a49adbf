package httpapi

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// decodeJSON refuses a repeated key at any depth and a lone surrogate in
// any string, keys included; what only looks like either passes.
func TestDecodeJSONKeysAndSurrogates(t *testing.T) {
	for body, want := range map[string]string{
		`{"name":"a","name":"b"}`:              `duplicate key "name"`,
		`{"a":1,"\u0061":2}`:                   `duplicate key "a"`,
		`{"x":{"y":[1,{"a":1,"b":2,"a":3}]}}`:  `duplicate key "a"`,
		`[{"a":1},{"a":2},{"b":1,"b":2}]`:      `duplicate key "b"`,
		`{"a":"\ud800"}`:                       `lone surrogate \ud800 in a string`,
		`{"a":"\udc00"}`:                       `lone surrogate \udc00 in a string`,
		`{"a":"x\ud800\u0041"}`:                `lone surrogate \ud800 in a string`,
		`{"a":"\uD800\uD800"}`:                 `lone surrogate \uD800 in a string`,
		`{"a":"\udc00\ud800"}`:                 `lone surrogate \udc00 in a string`,
		`{"a":"\ud800\\udc00"}`:                `lone surrogate \ud800 in a string`,
		`{"\ud800":1}`:                         `lone surrogate \ud800 in a string`,
		`{"a":["ok","\ud83d\ude00","\ude00"]}`: `lone surrogate \ude00 in a string`,
	} {
		var v any
		err := decodeJSON([]byte(body), &v)
		var api *apiError
		require.True(t, errors.As(err, &api), "%s: %v", body, err)
		require.Equal(t, 400, api.Status, body)
		require.Equal(t, "invalid_input", api.Code, body)
		require.Equal(t, want, api.Message, body)
	}

	for body, want := range map[string]any{
		`{"a":{"a":1},"b":[{"a":1},{"a":2}],"c":{"a":{"a":1}}}`: nil,
		`{"s":"\ud83d\ude00"}`:                           map[string]any{"s": "😀"},
		`{"s":"\uD83D\uDE00 \u00e9 \\ud800 \" ,\"s\":"}`: map[string]any{"s": "😀 é \\ud800 \" ,\"s\":"},
		`{"a":1,"A":2}`:                                  map[string]any{"a": 1.0, "A": 2.0},
		` "\ud83d\ude00" `:                               "😀",
	} {
		var v any
		require.NoError(t, decodeJSON([]byte(body), &v), body)
		if want != nil {
			require.Equal(t, want, v, body)
		}
	}
}
