package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/tokenbroker/tokenbroker/broker/creds"
	"github.com/tokenbroker/tokenbroker/broker/names"
)

// tenantExts are the extensions of the files read from tenants_dir.
var tenantExts = []string{".yaml", ".yml", ".json"}

// TenantFiles lists the tenant files of a tenants_dir, sorted: the entries
// whose name ends in .yaml, .yml or .json and does not start with a dot (a
// Kubernetes volume's "..data" and its timestamped directories). Symlinks
// are listed as they are; reading follows them.
func TenantFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, ".") && !e.IsDir() && slices.Contains(tenantExts, filepath.Ext(name)) {
			out = append(out, filepath.Join(dir, name))
		}
	}
	return out, nil
}

// tenantFiles reads the tenant files, GOMAXPROCS at a time, and adds them
// in file order. With KeepTenantsOnFileError any failure but a duplicate
// name is kept in the tenant's LoadErr (Name is then a best guess; File is
// set).
func (p *parser) tenantFiles(files []string) ([]Tenant, error) {
	loaded := make([]fileTenant, len(files))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, f := range files {
		sem <- struct{}{}
		wg.Go(func() { loaded[i] = p.tenantFile(f); <-sem })
	}
	wg.Wait()
	out := make([]Tenant, 0, len(files))
	for i, r := range loaded {
		p.addFile(files[i])
		for _, f := range r.fp.files {
			p.addFile(f)
		}
		if r.named {
			if err := p.unique(r.name, r.fp, "name"); err != nil {
				return nil, err // refused, not confined: two tenants claim the name
			}
		}
		err := r.err
		if fe, ok := errors.AsType[*tenantFileError](err); ok {
			err = fe.err
		}
		switch {
		case err == nil:
			out = append(out, r.t)
		case !p.keep:
			return nil, err
		default:
			out = append(out, Tenant{Name: r.name, File: files[i], LoadErr: err})
		}
	}
	return out, nil
}

// fileTenant is a tenant file as tenantFile loaded it.
type fileTenant struct {
	fp    *parser
	name  string // the tenant's name; a guess unless named
	named bool   // the file decoded and names a valid tenant
	t     Tenant
	err   error
}

// tenantFile loads a tenant file on a load of its own, which tenantFiles
// merges. The tenant's name is its name key, else the file name.
func (p *parser) tenantFile(path string) fileTenant {
	const fix = "write the tenant's keys, as in an entry of tenants"
	fp := &parser{name: path, baseDir: filepath.Dir(path), load: &load{now: p.now, log: p.log, keep: p.keep, strict: p.strict, seen: map[string]bool{}}}
	var d tenantDoc
	data, err := creds.ReadFile(path, MaxFileSize) // regular files only
	if fp.data = data; err != nil {
		err = &Error{File: path, Err: fmt.Errorf("cannot read tenant file: %w", err)}
	} else if err = fp.decode(&d, fix); err == nil && reflect.ValueOf(d).IsZero() {
		err = fp.empty(fix)
	}
	named := d.Name != ""
	d.Name = cmp.Or(d.Name, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	r := fileTenant{fp: fp, name: d.Name, err: err}
	switch nameErr := names.ValidTenant(d.Name); {
	case err != nil:
	case nameErr != nil && named:
		r.err = fp.errf("name", "%w", nameErr)
	case nameErr != nil:
		r.err = &Error{File: path, Err: fmt.Errorf("%w; it is the file name without extension: rename the file or set name", nameErr)}
	default:
		r.named = true
		r.t, r.err = fp.tenant(&d, "")
		r.t.File = path
	}
	return r
}
