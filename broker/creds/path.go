package creds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ExpandHome expands a leading "~" in path to the user's home directory, as
// a shell and kognic-auth do: "~" and "~/x" become $HOME and $HOME/x. Any
// other path is returned unchanged, including "~user/x", which names
// another user's home and is not supported. It fails only when path starts
// with "~" and the home directory is unknown (HOME unset).
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
