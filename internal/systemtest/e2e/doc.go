// Package e2e holds Epoch's end-to-end tests: they build the real api and
// worker binaries, run them as processes against the real Postgres and
// RabbitMQ (a database and a vhost per test), and check what an outside
// client sees: every event on the exchange with the message contract of
// DESIGN.md, the same storage and usage whether the subscribers run inline
// or remote, and exact storage and billing after the worker is SIGKILLed at
// random points or loses its broker connections. The package has no
// non-test code (what it shares with internal/systemtest/clustertest is in
// internal/testkit/e2ekit); this file only names it.
package e2e
