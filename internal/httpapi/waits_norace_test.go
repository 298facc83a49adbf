//go:build !race

package httpapi_test

import "time"

// clientSlack is the room a client's clock gives a wait over the api's
// timeout.
const clientSlack = time.Second
