//go:build race

package httpapi_test

import "time"

// clientSlack is the room a client's clock gives a wait over the api's
// timeout: the race detector slows every goroutine several times over.
const clientSlack = 5 * time.Second
