package config

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// DataSectionYAML renders a client file's data section for a CSV export,
// every key explicit, with notes as comment lines inside the section (so
// that ReplaceDataSection replaces them with it).
func DataSectionYAML(f CSVFile, notes []string) string {
	var b strings.Builder
	b.WriteString("data:\n")
	for _, n := range notes {
		for _, l := range strings.Split(n, "\n") {
			b.WriteString(strings.TrimRight("  # "+l, " ") + "\n")
		}
	}
	b.WriteString("  csv:\n")
	kv := func(k, v string) { fmt.Fprintf(&b, "    %s: %s\n", k, v) }
	kv("path", yamlScalar(f.Path))
	kv("label_column", yamlScalar(f.LabelColumn))
	kv("positive_labels", yamlList(f.PositiveLabels, true))
	if len(f.Numeric) == 1 && f.Numeric[0] == "all" {
		kv("numeric", "all")
	} else {
		kv("numeric", yamlList(f.Numeric, false))
	}
	kv("categorical", yamlList(f.Categorical, false))
	if len(f.Exclude) > 0 {
		kv("exclude", yamlList(f.Exclude, false))
	}
	kv("missing", yamlScalar(f.Missing))
	kv("missing_tokens", yamlList(f.MissingTokens, true))
	kv("test_fraction", strconv.FormatFloat(f.TestFraction, 'g', -1, 64))
	kv("seed", strconv.FormatInt(f.Seed, 10))
	kv("standardize", strconv.FormatBool(f.Standardize))
	return b.String()
}

var plainScalar = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// yamlScalar writes s as a YAML string: plain when that cannot be read as
// anything else, otherwise double-quoted (a JSON string is a valid YAML
// double-quoted scalar).
func yamlScalar(s string) string {
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null":
		return quoted(s)
	}
	if plainScalar.MatchString(s) {
		return s
	}
	return quoted(s)
}

func quoted(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// yamlList writes a flow list, wrapped at about 80 columns; quote forces
// double quotes on every item (label values: "1" must stay a string).
func yamlList(ss []string, quote bool) string {
	var b strings.Builder
	b.WriteString("[")
	col := 1
	for i, s := range ss {
		item := yamlScalar(s)
		if quote {
			item = quoted(s)
		}
		if i > 0 {
			b.WriteString(",")
			if col+len(item)+2 > 80 {
				b.WriteString("\n      ")
				col = 6
			} else {
				b.WriteString(" ")
				col += 2
			}
		}
		b.WriteString(item)
		col += len(item)
	}
	b.WriteString("]")
	return b.String()
}

var topLevelKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\s*:`)

// ReplaceDataSection returns text, a client file, with its top-level data
// section replaced by section (which starts with "data:"); every other
// line is kept as it was. Without a data section, section is appended.
func ReplaceDataSection(text, section string) string { return ReplaceSection(text, "data", section) }

// ReplaceSection returns text, a YAML file, with its top-level key's
// section replaced by section (empty: removed); every other line is kept
// as it was. The section runs from the "key:" line to the next top-level
// key, less the blank and comment lines just before that key (they belong
// to it). Without such a section, section is appended.
func ReplaceSection(text, key, section string) string {
	lines := strings.SplitAfter(text, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, key+":") {
			start = i
			break
		}
	}
	if section != "" && !strings.HasSuffix(section, "\n") {
		section += "\n"
	}
	if start < 0 {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		return text + section
	}
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		if topLevelKey.MatchString(lines[i]) || strings.HasPrefix(lines[i], "---") {
			end = i
			break
		}
	}
	for end > start+1 {
		l := lines[end-1]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			end--
			continue
		}
		break
	}
	return strings.Join(lines[:start], "") + section + strings.Join(lines[end:], "")
}
