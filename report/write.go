package report

import (
	"fmt"
	"os"
	"path/filepath"
)

// The files Write writes. They are never a run's own files (metrics.jsonl,
// run.json, eval.json, checkpoints), so a report in a run's folder leaves
// the run untouched.
const (
	HTMLFile     = "report.html"
	MarkdownFile = "report.md"
)

// Write renders runs as dir/report.html (see HTML) and dir/report.md (see
// Markdown), creating dir if needed, and returns the two paths. Each file
// is written to a temporary file in dir and renamed over the old one, so a
// reader never sees half a report and a failed write leaves the previous
// report as it was.
func Write(dir string, runs []*Run, opt Options) (htmlPath, mdPath string, err error) {
	pg, err := build(runs, opt, true)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	htmlPath, mdPath = filepath.Join(dir, HTMLFile), filepath.Join(dir, MarkdownFile)
	if err := writeAtomic(htmlPath, pg.html()); err != nil {
		return "", "", err
	}
	if err := writeAtomic(mdPath, pg.markdown()); err != nil {
		return "", "", err
	}
	return htmlPath, mdPath, nil
}

// writeAtomic writes data to path through a synced temporary file in the
// same folder and a rename.
func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
