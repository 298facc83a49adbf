package httpapi

// adminRoutes registers the operations API (DESIGN.md, "Operations"): every
// call takes the admin token (s.admin).
func (s *server) adminRoutes() {
	s.handle("POST /v1/admin/users/{id}/token", s.admin(s.rotateToken))
	s.handle("GET /v1/admin/status", s.admin(s.status))
}
