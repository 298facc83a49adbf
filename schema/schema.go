// Package schema embeds the numbered migrations (goose format, which sqlc
// reads too) so the api can apply them at start-up.
package schema

import "embed"

// Migrations holds every NNNN_name.sql file of this folder.
//
//go:embed *.sql
var Migrations embed.FS
