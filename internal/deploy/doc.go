// Package deploy has no code of its own: its tests check the deployment
// files at the repository root (docker-compose.yml, Dockerfile) against the
// binaries, ports and settings they name, so that those files, which no
// test here can run without a Docker engine, cannot silently rot.
package deploy
