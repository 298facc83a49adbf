// Package deploy has no code of its own: its tests check the deployment
// files (docker-compose.yml, Dockerfile, deploy/) against the binaries,
// ports, settings and metrics they name, so that those files, which no test
// here can run without a Docker engine, cannot silently rot; and the
// binaries' default tags against the packages' constants they repeat. The
// exceptions run what they check: the RabbitMQ users' rights and the
// dead-letter policy are tried on a vhost of the real broker, the Grafana
// dashboard's queries are parsed by promtool, and the metrics they name
// are read off a running api and worker.
package deploy
