// Package clustertest holds Epoch's fault tests against a real three-node
// RabbitMQ cluster (scripts/rabbitmq-cluster): two api and two worker
// processes share one Postgres database and a vhost of the cluster, under a
// steady load of commands, while the test kills, stops and restarts nodes
// (the queues' leader, then another, then all three), cuts the leader off
// from the other two (nftables, until pause_minority pauses it, then
// heals), kills the node the classic queue of unsubscribed events lives
// on while job commands land, or kills a worker; and one test checks that
// the subscriber queues and their dead-letter queues have a member on
// every node.
// Each asserts what DESIGN.md promises through it: every committed event
// reaches each subscriber and an outside consumer, each stream in version
// order, and storage and usage stay exact to the microsecond.
//
// The cluster is one per machine (fixed ports), so the package takes an
// exclusive flock on /tmp/epoch-cluster.lock for its whole run, which
// anything else using the cluster (the benchmark, scripts/test's start and
// stop) takes too. TestMain runs `scripts/rabbitmq-cluster up` under that
// lock, which starts what is not running and is a no-op on a running
// cluster; a cluster that does not come up fails the package, never skips
// it. The package has no non-test code; this file only names it.
package clustertest
