package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/imokit/imo/internal/graph"
)

// maxListPages bounds how many pages of a catalog or tag list are followed,
// and maxListNames how many names they may hold in all, so that a registry
// cannot make imo page for ever or hold what it sends without end.
const (
	maxListPages = 100_000
	maxListNames = 1_000_000
)

// listAll GETs path on host and every next page its Link headers name, and
// returns the strings under key ("repositories" or "tags") of every page.
//
// It pages by itself rather than through go-containerregistry, which checks
// each next page's scheme against name.Registry.Scheme: that says http for
// loopback and private addresses, where imo speaks HTTPS unless told
// otherwise, so a far-side registry on 10.0.0.5 with TLS would fail on its
// second page.
func listAll(ctx context.Context, client *http.Client, policy Policy, scheme, host, path, key string) ([]string, error) {
	next := &url.URL{Scheme: scheme, Host: host, Path: path}
	// A redirect to another host or scheme is refused, as a Link to one is.
	c := *client
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
			return fmt.Errorf("listing %s on %s: redirected to another host, %s", path, host, req.URL.Redacted())
		}
		return nil
	}
	client = &c
	var all []string
	visited := map[string]bool{}
	for n := 0; next != nil; n++ {
		if n == maxListPages {
			return nil, fmt.Errorf("listing %s on %s: more than %d pages", path, host, maxListPages)
		}
		if visited[next.String()] {
			return nil, fmt.Errorf("listing %s on %s: the pages loop back to %s", path, host, next.Redacted())
		}
		visited[next.String()] = true
		var page map[string]json.RawMessage
		var link string
		err := policy.do(ctx, func() error {
			req, err := http.NewRequestWithContext(patient(ctx), http.MethodGet, next.String(), nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if err := checkAnswer(resp, http.StatusOK); err != nil {
				return err
			}
			body, err := io.ReadAll(io.LimitReader(resp.Body, graph.MaxManifestSize+1))
			if err != nil {
				return err
			}
			if len(body) > graph.MaxManifestSize {
				return fmt.Errorf("listing %s on %s: a page of more than %d bytes", path, host, graph.MaxManifestSize)
			}
			page = nil
			if err := json.Unmarshal(body, &page); err != nil {
				return fmt.Errorf("listing %s on %s: the answer does not parse: %w", path, host, err)
			}
			link = resp.Header.Get("Link")
			return nil
		})
		if err != nil {
			return nil, err
		}
		var names []string
		if raw, ok := page[key]; ok {
			if err := json.Unmarshal(raw, &names); err != nil {
				return nil, fmt.Errorf("listing %s on %s: %q does not parse: %w", path, host, key, err)
			}
		}
		if all = append(all, names...); len(all) > maxListNames {
			return nil, fmt.Errorf("listing %s on %s: more than %d names", path, host, maxListNames)
		}
		if next, err = nextPage(next, link); err != nil {
			return nil, fmt.Errorf("listing %s on %s: %w", path, host, err)
		}
	}
	return all, nil
}

// nextPage resolves the URL a Link header names (`<url>; rel="next"`)
// against cur; it is nil when there is no next page. A link to another
// host or scheme is an error; a link of another relation is no next page.
func nextPage(cur *url.URL, link string) (*url.URL, error) {
	if link == "" {
		return nil, nil
	}
	if _, params, _ := strings.Cut(link, ";"); !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) && !strings.Contains(strings.ReplaceAll(params, " ", ""), "rel=next") {
		return nil, nil
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start != 0 || end < 0 {
		return nil, fmt.Errorf("cannot parse Link header %q", link)
	}
	if strings.TrimSpace(link[1:end]) == "" {
		return nil, nil
	}
	u, err := cur.Parse(link[1:end])
	if err != nil {
		return nil, fmt.Errorf("cannot parse Link header %q: %w", link, err)
	}
	if u.Scheme != cur.Scheme || u.Host != cur.Host {
		return nil, fmt.Errorf("the next page %s is not on %s://%s", u.Redacted(), cur.Scheme, cur.Host)
	}
	if u.String() == cur.String() {
		return nil, fmt.Errorf("the next page %s is the page itself", u.Redacted())
	}
	return u, nil
}
