package creds

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestCheckSecretFiles(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no POSIX modes")
	}
	dir := t.TempDir()
	files := map[string]os.FileMode{"private": 0o600, "readonly": 0o400, "group": 0o640, "world": 0o604, "all": 0o644}
	paths := map[string]string{}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret-content"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // not subject to umask
			t.Fatal(err)
		}
		paths[name] = p
	}
	for name, bad := range map[string]bool{"private": false, "readonly": false, "group": true, "world": true, "all": true} {
		err := CheckFileMode(paths[name])
		if _, got := errors.AsType[*PermissionError](err); got != bad {
			t.Errorf("%s (%04o): CheckFileMode = %v, want permission problem=%v", name, files[name], err, bad)
		}
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	all := []string{paths["private"], paths["group"], "", paths["all"]}
	if err := CheckSecretFiles(log, false, all...); err != nil {
		t.Fatalf("lenient check failed: %v", err)
	}
	out := logs.String()
	if strings.Count(out, "level=WARN") != 2 || !strings.Contains(out, paths["group"]) || !strings.Contains(out, paths["all"]) ||
		strings.Contains(out, paths["private"]+" ") || !strings.Contains(out, "mode=0640") {
		t.Errorf("warnings = %q, want one each for group and all", out)
	}
	if strings.Contains(out, "secret-content") {
		t.Error("file content logged")
	}

	err := CheckSecretFiles(log, true, all...)
	if _, ok := errors.AsType[*PermissionError](err); !ok || !strings.Contains(err.Error(), paths["group"]) || !strings.Contains(err.Error(), paths["all"]) ||
		!strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("strict check = %v, want errors naming both files and the fix", err)
	}
	if err := CheckSecretFiles(log, false, filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file not reported")
	}
}
