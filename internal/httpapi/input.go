package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/commandside/readmodel"
	"github.com/catacloud/epoch/internal/core/domain"
)

// Limits of the requests themselves, of DESIGN.md; the rules of the values
// they carry are internal/core/domain's.
const (
	maxIdempotencyKey = 255
	defaultLimit      = 100
	maxLimit          = 1000
)

// readJSON reads the body (at most MaxBodyBytes, 413 past it) and decodes
// it strictly into a T. The raw body comes back too: an idempotency key is
// checked against it.
func readJSON[T any](w http.ResponseWriter, r *http.Request) (body []byte, in T, err error) {
	if body, err = readBody(w, r); err != nil {
		return nil, in, err
	}
	if err = decodeJSON(body, &in); err != nil {
		return nil, in, err
	}
	return body, in, nil
}

// readBody reads the whole body, at most MaxBodyBytes (413 past it).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, errBodyTooLarge
	}
	if err != nil {
		return nil, errInvalid("could not read the body: " + err.Error())
	}
	return body, nil
}

// decodeJSON decodes body into dst strictly: valid UTF-8, one JSON value, no
// unknown fields (a key is a field's exact name), no wrong types, nothing
// after it, no duplicate key and no lone surrogate.
func decodeJSON(body []byte, dst any) error {
	if !utf8.Valid(body) {
		return errInvalid("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return errInvalid(describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errInvalid("unexpected data after the JSON object")
	}
	return checkKeysAndStrings(body, reflect.TypeOf(dst))
}

// jsonFields maps the exact JSON names of t's fields, as encoding/json
// names them (embedded structs' fields included), to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
			continue
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			for k, v := range jsonFields(f.Type) {
				fields[k] = v
			}
			continue
		case !f.IsExported():
			continue
		case name == "":
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// checkKeysAndStrings finds what encoding/json lets through: a key repeated
// in an object (the last one would win, silently), a key that is a field's
// name in another case (encoding/json fills "name" from "Name"), at any
// depth of t, the type body decodes into, and a \u escape of a lone
// surrogate (it would become U+FFFD). body must be one valid JSON value, so
// one pass over its bytes needs to follow only strings and brackets.
func checkKeysAndStrings(body []byte, t reflect.Type) error {
	var stack []jsonFrame
	expectKey := false
	next := t // the type the next value decodes into
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '{', '[':
			f := jsonFrame{object: body[i] == '{', typ: indirect(next)}
			if f.object && f.typ != nil && f.typ.Kind() == reflect.Struct {
				f.fields = jsonFields(f.typ)
			}
			stack = append(stack, f)
			expectKey = f.object
			next = f.elem()
		case '}', ']':
			stack = stack[:len(stack)-1]
		case ',':
			top := stack[len(stack)-1]
			expectKey = top.object
			next = top.elem()
		case ':':
			expectKey = false
		case '"':
			end, escaped, err := scanString(body, i)
			if err != nil {
				return err
			}
			if expectKey {
				key := string(body[i+1 : end])
				if escaped {
					// Valid JSON, so this cannot fail.
					_ = json.Unmarshal(body[i:end+1], &key)
				}
				top := &stack[len(stack)-1]
				if _, dup := top.keys[key]; dup {
					return errInvalid(fmt.Sprintf("duplicate key %q", domain.Excerpt(key)))
				}
				if top.keys == nil {
					top.keys = map[string]struct{}{}
				}
				top.keys[key] = struct{}{}
				if top.fields != nil {
					ft, ok := top.fields[key]
					if !ok {
						return errInvalid(fmt.Sprintf("unknown field %q", domain.Excerpt(key)))
					}
					next = ft
				}
			}
			i = end
		}
	}
	return nil
}

// jsonFrame is one open bracket of a body: an object's keys so far, to
// find a repeat; the Go type it decodes into (nil: none whose keys are
// checked) and, for a struct, its fields by their exact names.
type jsonFrame struct {
	object bool
	keys   map[string]struct{}
	typ    reflect.Type
	fields map[string]reflect.Type
}

// elem is the type a value directly in the frame decodes into: a map's or
// a slice's element (bytes, as json.RawMessage, hold no fields); nil for a
// struct, whose keys name their fields' types.
func (f jsonFrame) elem() reflect.Type {
	if f.typ == nil {
		return nil
	}
	switch f.typ.Kind() {
	case reflect.Map:
		return f.typ.Elem()
	case reflect.Slice, reflect.Array:
		if f.typ.Elem().Kind() == reflect.Uint8 {
			return nil
		}
		return f.typ.Elem()
	}
	return nil
}

// indirect is t without its pointers (nil stays nil).
func indirect(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// scanString reads the string literal that opens at body[start]: the index
// of its closing quote, whether it holds an escape, and an error for a
// \u escape of a surrogate that is not a high one followed by a low one.
func scanString(body []byte, start int) (end int, escaped bool, err error) {
	for i := start + 1; i < len(body); i++ {
		switch body[i] {
		case '"':
			return i, escaped, nil
		case '\\':
			escaped = true
			if body[i+1] != 'u' {
				i++
				continue
			}
			r := hexRune(body[i+2 : i+6])
			if !utf16.IsSurrogate(r) {
				i += 5
				continue
			}
			if r < 0xdc00 && i+12 <= len(body) && string(body[i+6:i+8]) == `\u` &&
				utf16.DecodeRune(r, hexRune(body[i+8:i+12])) != unicode.ReplacementChar {
				i += 11 // a high surrogate and its low one
				continue
			}
			return 0, false, errInvalid(fmt.Sprintf("lone surrogate %s in a string", body[i:i+6]))
		}
	}
	return len(body), escaped, nil // not reached: body is valid JSON
}

// hexRune reads the four hex digits of a \u escape (valid JSON has them).
func hexRune(h []byte) rune {
	n, _ := strconv.ParseUint(string(h), 16, 16)
	return rune(n)
}

func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty; a JSON object is expected"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of the body"
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("a JSON object is expected, not %s", typ.Value)
		}
		return fmt.Sprintf("%s must be %s, not %s", typ.Field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	default:
		return strings.TrimPrefix(err.Error(), "json: ")
	}
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	default:
		return "a " + kind
	}
}

// requiredName reads a required "name" field: present, then the name rule.
func requiredName(name *string) (string, error) {
	if name == nil {
		return "", errInvalid("name is required")
	}
	return *name, domain.CheckName("name", *name)
}

// parseSize reads size_bytes from its raw JSON: present, then the size
// rule on the number as written (a string or any other JSON value is not
// an integer).
func parseSize(raw json.RawMessage) (int64, error) {
	s := string(raw)
	if s == "" || s == "null" {
		return 0, errInvalid("size_bytes is required")
	}
	return domain.ParseSize(s)
}

// pathID reads a UUID path segment; a malformed one is a 400.
func pathID(r *http.Request, name string) (uuid.UUID, error) {
	return domain.ParseID(name, r.PathValue(name))
}

// parseFileIDs reads the file_ids of PUT /v1/jobs/{id}/files: present,
// then the rule of the list. The body limit bounds what is parsed here.
func parseFileIDs(raw *[]string) ([]uuid.UUID, error) {
	if raw == nil {
		return nil, errInvalid("file_ids is required")
	}
	return domain.ParseFileIDs(*raw)
}

// parseIfMatch reads If-Match: an ETag "<n>" or a bare <n>; "*" (any
// version) and no header are no condition. Anything else is a 400.
func parseIfMatch(r *http.Request) (*int32, error) {
	values := r.Header.Values("If-Match")
	if len(values) == 0 {
		return nil, nil
	}
	v := strings.TrimSpace(strings.Join(values, ","))
	if v == "*" {
		return nil, nil
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return nil, errInvalid(`If-Match must be a job's ETag ("3") or its version (3)`)
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return nil, errInvalid("If-Match names a version out of range")
	}
	version := int32(n)
	return &version, nil
}

// parsePage reads ?limit= (default 100, 1..1000) and ?cursor=.
func parsePage(r *http.Request) (readmodel.Cursor, int32, error) {
	limit, err := parseLimit(r)
	if err != nil {
		return readmodel.Cursor{}, 0, err
	}
	cursor, err := readmodel.ParseCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		return readmodel.Cursor{}, 0, errInvalid("cursor is not one this API handed out")
	}
	return cursor, limit, nil
}

// parseLimit reads ?limit= (default 100, 1..1000).
func parseLimit(r *http.Request) (int32, error) {
	q := r.URL.Query()
	limit := defaultLimit
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return 0, errInvalid(fmt.Sprintf("limit must be an integer from 1 to %d", maxLimit))
		}
		limit = n
	}
	return int32(limit), nil
}

// parseIdempotencyKey reads Idempotency-Key ("" when absent).
func parseIdempotencyKey(r *http.Request) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", errInvalid("give one Idempotency-Key")
	}
	key := values[0]
	if key == "" {
		return "", errInvalid("Idempotency-Key must not be empty")
	}
	if !utf8.ValidString(key) {
		return "", errInvalid("Idempotency-Key must be UTF-8")
	}
	if utf8.RuneCountInString(key) > maxIdempotencyKey {
		return "", errInvalid(fmt.Sprintf("Idempotency-Key must be at most %d characters", maxIdempotencyKey))
	}
	return key, nil
}

func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}
