package sandbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// DistributionBinary is the CNCF distribution registry as Debian installs it
// (package docker-registry).
const DistributionBinary = "docker-registry"

// DistributionOptions configure a real registry.
type DistributionOptions struct {
	// TLS, when set, makes the registry serve HTTPS with this certificate.
	TLS *tls.Certificate
	// User and Password, when set, require basic auth (htpasswd).
	User, Password string
}

// Distribution is a running CNCF distribution registry on 127.0.0.1 with
// its own storage directory.
type Distribution struct {
	// Host is the registry's host:port.
	Host string
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan error
}

// lockedBuffer collects the registry's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartDistribution starts the registry binary with a config written into
// dir, which also holds its storage, and waits until /v2/ answers.
func StartDistribution(ctx context.Context, dir string, o DistributionOptions) (*Distribution, error) {
	bin, err := exec.LookPath(DistributionBinary)
	if err != nil {
		return nil, fmt.Errorf("%s not found (apt-get install docker-registry): %w", DistributionBinary, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n", filepath.Join(dir, "storage"))
	fmt.Fprintf(&cfg, "http:\n  addr: %s\n  secret: sandbox-secret\n", host)
	if o.TLS != nil {
		certPEM, keyPEM, err := CertPEM(*o.TLS)
		if err != nil {
			return nil, err
		}
		certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
		if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
			return nil, err
		}
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "  tls:\n    certificate: %s\n    key: %s\n", certFile, keyFile)
	}
	if o.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: sandbox\n    path: %s\n", htpasswd)
	}
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}

	d := &Distribution{Host: host, logs: &lockedBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(bin, "serve", config)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	if err := d.waitReady(ctx, o.TLS != nil); err != nil {
		d.Stop()
		return nil, fmt.Errorf("%s did not come up on %s: %w\n%s", DistributionBinary, host, err, d.logs)
	}
	return d, nil
}

// waitReady polls /v2/ until the registry answers (200, or 401 with auth).
func (d *Distribution) waitReady(ctx context.Context, useTLS bool) error {
	scheme := "http"
	client := &http.Client{Timeout: time.Second}
	if useTLS {
		scheme = "https"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // readiness probe only
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+d.Host+"/v2/", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case err := <-d.done:
			return fmt.Errorf("it exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the registry and waits for it to exit.
func (d *Distribution) Stop() {
	if d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// Logs returns what the registry printed.
func (d *Distribution) Logs() string { return d.logs.String() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("no TCP port")
	}
	return addr.Port, nil
}
