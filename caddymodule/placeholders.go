package caddymodule

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// placeholder matches the {env.NAME} and {file.PATH} placeholders whose
// absence leaves a credential empty.
var placeholder = regexp.MustCompile(`\{(env|file)\.([^{}]+)\}`)

// unsetPlaceholders says which placeholders of raw expand to nothing (an
// unset variable, an unreadable or empty file), as ": environment variable
// X is not set", so that an empty credential names its cause. It shows
// names and paths, never values.
func unsetPlaceholders(raw string) string {
	var causes []string
	for _, m := range placeholder.FindAllStringSubmatch(raw, -1) {
		kind, name := m[1], m[2]
		switch kind {
		case "env":
			if v, ok := os.LookupEnv(name); !ok {
				causes = append(causes, fmt.Sprintf("environment variable %s is not set", name))
			} else if strings.TrimSpace(v) == "" {
				causes = append(causes, fmt.Sprintf("environment variable %s is empty", name))
			}
		case "file":
			if info, err := os.Stat(name); err != nil {
				var pathErr *os.PathError
				if errors.As(err, &pathErr) {
					err = pathErr.Err
				}
				causes = append(causes, fmt.Sprintf("file %s cannot be read (%v)", name, err))
			} else if info.Size() == 0 {
				causes = append(causes, fmt.Sprintf("file %s is empty", name))
			}
		}
	}
	if len(causes) == 0 {
		return " (is the variable or file set?)"
	}
	return ": " + strings.Join(causes, "; ")
}

// placeholdersOnly is raw with everything but its placeholders elided:
// what may be shown of a secret's configuration.
func placeholdersOnly(raw string) string {
	found := placeholder.FindAllString(raw, -1)
	if len(found) == 0 {
		return "value not shown"
	}
	return strings.Join(found, "…")
}
