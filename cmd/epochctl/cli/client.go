package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxAnswerBytes bounds what one answer may hold: the API's pages are at
// most 1,000 items, far below it.
const maxAnswerBytes = 64 << 20

// client calls the admin API as the admin token. The token goes only into
// the Authorization header: no message of the client's holds it.
type client struct {
	base  string // the api's URL, no trailing slash
	token string
	http  *http.Client
}

// answer is a 2xx answer, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// decode reads the answer's JSON into v; an answer that is not the API's
// JSON means something else answered at the URL (ExitUnavailable).
func (a answer) decode(v any) error {
	if err := json.Unmarshal(a.body, v); err != nil {
		return &exitError{code: ExitUnavailable, msg: fmt.Sprintf("the api's answer is not the JSON it should be: %v", err)}
	}
	return nil
}

// apiErrorBody is the API's error shape.
type apiErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// do sends method path with body as JSON (nil: no body) and returns a 2xx
// answer; anything else is an *exitError: 4xx the API's refusal
// (ExitRefused), 5xx, no answer or another status ExitUnavailable, and ctx
// ending ExitInterrupted.
func (c *client) do(ctx context.Context, method, path string, body any) (answer, error) {
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		reader = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reader)
	if err != nil {
		return answer{}, usageError("%s %s: %v", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return answer{}, &exitError{code: ExitInterrupted, msg: "interrupted"}
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text repeats the method and URL
		}
		return answer{}, &exitError{code: ExitUnavailable, msg: fmt.Sprintf("cannot reach the api at %s: %v", c.base, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return answer{}, &exitError{code: ExitUnavailable, msg: fmt.Sprintf("reading the api's answer to %s %s: %v", method, path, err)}
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return a, nil
	}
	code := ExitUnavailable
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		code = ExitRefused
	}
	return answer{}, &exitError{code: code, msg: describeRefusal(method, path, resp.StatusCode, b)}
}

// describeRefusal is the one line that says why the api did not do it:
// the API's message and code when it answered its error shape.
func describeRefusal(method, path string, status int, body []byte) string {
	var e apiErrorBody
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return fmt.Sprintf("%s (%d %s)", e.Error.Message, status, e.Error.Code)
	}
	return fmt.Sprintf("%s %s: the api answered %d %s", method, path, status, http.StatusText(status))
}
