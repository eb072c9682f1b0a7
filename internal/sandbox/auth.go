package sandbox

import (
	"fmt"
	"net/http"
)

// BasicAuth wraps a registry handler so that every request must carry
// the given basic-auth credentials.
func BasicAuth(user, pass string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="sandbox"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}

// TokenAuth wraps a registry handler with a token service of its own, as
// Docker Hub and Harbor work: /token trades the given basic-auth
// credentials for a bearer token that every /v2/ request must carry.
func TokenAuth(user, pass string) func(http.Handler) http.Handler {
	const token = "sandbox-token"
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
					http.Error(w, "bad credentials", http.StatusUnauthorized)
					return
				}
				fmt.Fprintf(w, `{"token":%q}`, token)
				return
			}
			if r.Header.Get("Authorization") != "Bearer "+token {
				scheme := "http"
				if r.TLS != nil {
					scheme = "https"
				}
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s://%s/token",service="sandbox"`, scheme, r.Host))
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
}
