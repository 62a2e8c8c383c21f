package creds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ExpandHome expands a leading "~" or "~/" in path to the home directory,
// as a shell does ("~user" is not supported). It fails only when HOME is
// unknown.
func ExpandHome(path string) (string, error) {
	if path != "~" && !strings.HasPrefix(path, "~/") && !strings.HasPrefix(path, "~"+string(filepath.Separator)) {
		return path, nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		if err == nil {
			err = errors.New("empty home directory")
		}
		return path, fmt.Errorf("credentials: cannot expand ~ in %q: %w; set HOME or give the full path", path, err)
	}
	return filepath.Join(home, path[1:]), nil
}
