package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix prefixes every environment variable fedledger reads.
const EnvPrefix = "FEDLEDGER"

// ErrConfig marks every configuration error, so callers can tell a bad
// configuration (exit status 2) from a runtime failure.
var ErrConfig = errors.New("configuration error")

// source remembers where a loaded file came from, to resolve relative paths.
type source struct {
	v     *viper.Viper
	file  string
	dir   string
	flags *pflag.FlagSet
	binds map[string]string
}

// load fills out (a pointer to a *File struct) from defaults, the file at
// path (optional), FEDLEDGER_* variables and the bound flags, in rising
// precedence. binds maps config keys to flag names.
func load(path string, flags *pflag.FlagSet, binds map[string]string, defaults, out any) (*source, error) {
	v := viper.New()
	setDefaults(v, "", reflect.ValueOf(defaults))
	s := &source{v: v, flags: flags, binds: binds}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
		}
		s.file = path
		s.dir = filepath.Dir(path)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for key, name := range binds {
		if flags == nil {
			break
		}
		if f := flags.Lookup(name); f != nil {
			if err := v.BindPFlag(key, f); err != nil {
				return nil, fmt.Errorf("%w: flag --%s: %v", ErrConfig, name, err)
			}
		}
	}
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	))
	if err := v.UnmarshalExact(out, hook); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, s.where(), err)
	}
	return s, nil
}

func (s *source) where() string {
	if s.file == "" {
		return "flags/environment"
	}
	return s.file
}

// errorf builds a configuration error naming the file and key.
func (s *source) errorf(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s: %s", ErrConfig, s.where(), key, fmt.Sprintf(format, args...))
}

// path resolves a path-valued key: relative to the config file's directory
// when the value came from the file, relative to the working directory when
// it came from a flag or the environment.
func (s *source) path(key, value string) string {
	if value == "" || filepath.IsAbs(value) || s.dir == "" {
		return value
	}
	if name, ok := s.binds[key]; ok && s.flags != nil {
		if f := s.flags.Lookup(name); f != nil && f.Changed {
			return value
		}
	}
	if _, ok := os.LookupEnv(EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))); ok {
		return value
	}
	return filepath.Join(s.dir, value)
}

// setDefaults registers every leaf key of a *File struct with its default,
// so that viper knows the key exists and FEDLEDGER_* variables reach it.
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	if val.Kind() == reflect.Pointer {
		val = val.Elem()
	}
	t := val.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		fv := val.Field(i)
		if fv.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			setDefaults(v, key+".", fv)
			continue
		}
		v.SetDefault(key, fv.Interface())
	}
}
