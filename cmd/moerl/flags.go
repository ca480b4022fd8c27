package main

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// newFlagSet makes a FlagSet that reports errors instead of exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: moerl %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a parse error becomes a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	return nil
}

// bindStruct registers one flag per exported field of the struct that ptr
// points to, named after its json tag with '_' as '-' and an optional prefix,
// so that every config field can be set from the command line. It returns
// the set of flag names it made. Fields whose json names are in skip get no
// flag.
func bindStruct(fs *flag.FlagSet, ptr any, prefix, what string, skip ...string) []string {
	v := reflect.ValueOf(ptr).Elem()
	t := v.Type()
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() || slices.Contains(skip, tag) {
			continue
		}
		name := prefix + strings.ReplaceAll(tag, "_", "-")
		usage := what + " " + tag
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Int:
			fs.Var(intValue{fv}, name, usage)
		case reflect.Uint64:
			fs.Var(uintValue{fv}, name, usage)
		case reflect.Float64:
			fs.Var(floatValue{fv}, name, usage)
		case reflect.Bool:
			fs.Var(boolValue{fv}, name, usage)
		case reflect.String:
			fs.Var(stringValue{fv}, name, usage)
		default:
			continue
		}
		names = append(names, name)
	}
	return names
}

type intValue struct{ v reflect.Value }

func (x intValue) String() string {
	if !x.v.IsValid() {
		return "0"
	}
	return strconv.FormatInt(x.v.Int(), 10)
}
func (x intValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return fmt.Errorf("want an integer")
	}
	x.v.SetInt(n)
	return nil
}

type uintValue struct{ v reflect.Value }

func (x uintValue) String() string {
	if !x.v.IsValid() {
		return "0"
	}
	return strconv.FormatUint(x.v.Uint(), 10)
}
func (x uintValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return fmt.Errorf("want a non-negative integer")
	}
	x.v.SetUint(n)
	return nil
}

type floatValue struct{ v reflect.Value }

func (x floatValue) String() string {
	if !x.v.IsValid() {
		return "0"
	}
	return strconv.FormatFloat(x.v.Float(), 'g', -1, 64)
}
func (x floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("want a number")
	}
	x.v.SetFloat(f)
	return nil
}

type boolValue struct{ v reflect.Value }

func (x boolValue) IsBoolFlag() bool { return true }
func (x boolValue) String() string {
	if !x.v.IsValid() {
		return "false"
	}
	return strconv.FormatBool(x.v.Bool())
}
func (x boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	x.v.SetBool(b)
	return nil
}

type stringValue struct{ v reflect.Value }

func (x stringValue) String() string {
	if !x.v.IsValid() {
		return ""
	}
	return x.v.String()
}
func (x stringValue) Set(s string) error { x.v.SetString(s); return nil }

// setFlags reports which flags were given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// copySetFields copies into dst each field of src (same struct type) whose
// flag, made by bindStruct with prefix, was set on the command line: flags
// override a preset without resetting the fields they do not name.
func copySetFields(fs *flag.FlagSet, dst, src any, prefix string) {
	set := setFlags(fs)
	dv, sv := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	t := dv.Type()
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		if tag != "" && set[prefix+strings.ReplaceAll(tag, "_", "-")] {
			dv.Field(i).Set(sv.Field(i))
		}
	}
}
