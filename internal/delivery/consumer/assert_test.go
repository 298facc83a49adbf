package consumer_test

import "github.com/stretchr/testify/assert"

// assertT is what EventuallyWithT hands its condition.
type assertT = assert.CollectT
