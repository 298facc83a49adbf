// Package deploy has no code of its own: its tests check the deployment
// files (docker-compose.yml, Dockerfile, deploy/) against the binaries,
// ports, settings and metrics they name, so that those files, which no test
// here can run without a Docker engine, cannot silently rot; and the
// binaries' default tags against the packages' constants they repeat. The
// RabbitMQ users' rights and the dead-letter policy are the exception: they
// are tried on a vhost of the real broker.
package deploy
