package httpapi

// adminRoutes registers the operations API (DESIGN.md, "Operations"): every
// call takes the admin token (s.admin).
func (s *server) adminRoutes() {
	s.handle("POST /v1/admin/users/{id}/token", s.admin(s.rotateToken))
	s.handle("POST /v1/admin/subscribers/{name}/redrive", s.admin(s.redrive))
	s.handle("POST /v1/admin/subscribers/{name}/rebuild", s.admin(s.rebuildSubscriber))
	s.handle("POST /v1/admin/projections/rebuild", s.admin(s.rebuildProjections))
	s.handle("GET /v1/admin/operations/{id}", s.admin(s.getOperation))
	s.handle("GET /v1/admin/subscribers/{name}/dead-letters", s.admin(s.listDeadLetters))
	s.handle("POST /v1/admin/subscribers/{name}/dead-letters/replay", s.admin(s.replayDeadLetters))
	s.handle("DELETE /v1/admin/subscribers/{name}/dead-letters/{event_id}", s.admin(s.discardDeadLetter))
	s.handle("GET /v1/admin/status", s.admin(s.status))
	s.handle("POST /v1/admin/prices", s.admin(s.schedulePrice))
	s.handle("GET /v1/admin/prices", s.admin(s.listPrices))
	s.handle("POST /v1/admin/statements/verify", s.admin(s.verifyStatements))
}
