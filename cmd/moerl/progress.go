package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress draws one status line: redrawn in place on a terminal, printed
// every few seconds otherwise (logs, CI).
type progress struct {
	w        io.Writer
	total    int
	start    time.Time
	last     time.Time
	terminal bool
	label    string
	// first is the step count at the first update (when start was set): a resumed
	// run's rate (and so its ETA) counts only the steps of this process.
	first int
	begun bool
}

func newProgress(w io.Writer, label string, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now(), label: label}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

// update shows step done of total with a message; the ETA comes from the
// average time per step so far.
func (p *progress) update(done int, msg string) {
	now := time.Now()
	if !p.begun {
		p.begun, p.first = true, done
	}
	if !p.terminal && now.Sub(p.last) < 5*time.Second && done < p.total {
		return
	}
	p.last = now
	el := now.Sub(p.start)
	eta := "?"
	if done > p.first {
		eta = fmtDuration(time.Duration(float64(el) / float64(done-p.first) * float64(p.total-done)))
	}
	const width = 20
	fill := width * done / max(p.total, 1)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < fill {
			bar[i] = '#'
		}
	}
	line := fmt.Sprintf("%s [%s] %d/%d %s elapsed %s eta %s", p.label, bar, done, p.total, msg, fmtDuration(el), eta)
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// finish ends the line.
func (p *progress) finish() {
	if p.terminal {
		fmt.Fprintln(p.w)
	}
}

func fmtDuration(d time.Duration) string {
	s := int(d.Seconds() + 0.5)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// fmtRate prints a per-second rate with a k/M suffix.
func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
