package report

import (
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// chromium is the headless browser the drawing test uses: $MOERL_CHROMIUM,
// else Debian's chromium; "" when there is none.
func chromium() string {
	if p := os.Getenv("MOERL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestPageDrawsInChromium renders a report of a study (a pretraining run,
// two RL runs, their evaluations) in headless Chromium and checks the
// screenshot: each run's colour covers many pixels (its curves were drawn,
// not only its legend swatch), and drawn pixels fill most rows of the page
// where plots stand. It skips without Chromium unless
// MOERL_REQUIRE_CHROMIUM=1.
func TestPageDrawsInChromium(t *testing.T) {
	if testing.Short() && os.Getenv("MOERL_REQUIRE_CHROMIUM") != "1" {
		t.Skip("starts a browser (-short)")
	}
	bin := chromium()
	if bin == "" {
		if os.Getenv("MOERL_REQUIRE_CHROMIUM") == "1" {
			t.Fatal("MOERL_REQUIRE_CHROMIUM=1 but no chromium found (apt-get install chromium)")
		}
		t.Skip("no chromium (apt-get install chromium; MOERL_REQUIRE_CHROMIUM=1 makes this a failure)")
	}
	dir := studyFixture(t)
	runs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	htmlPath, _, err := Write(dir, runs, Options{Smooth: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Chromium may still be closing files in its profile when it exits:
	// remove that folder ourselves and ignore what lingers.
	profile, err := os.MkdirTemp("", "moerl-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(profile)
	shot := filepath.Join(t.TempDir(), "page.png")
	if d := os.Getenv("MOERL_SHOT"); d != "" {
		shot = d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+profile, "--screenshot="+shot, "--window-size=1200,2400", "file://"+htmlPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 2400 {
		t.Fatalf("screenshot %v, want 1200×2400", b)
	}

	// base is drawn in the palette's first colour, grpo in its second, ppo
	// in its third.
	colours := map[string][3]int{"base": {0x1f, 0x77, 0xb4}, "grpo": {0xd6, 0x27, 0x28}, "ppo": {0x2c, 0xa0, 0x2c}}
	hits := map[string]int{}
	const band = 100 // rows per horizontal band of the page
	drawnBands := map[int]bool{}
	nonWhite := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl := rgb8(img, x, y)
			if r < 245 || g < 245 || bl < 245 {
				nonWhite++
			}
			for name, c := range colours {
				if abs(r-c[0])+abs(g-c[1])+abs(bl-c[2]) < 60 {
					hits[name]++
					drawnBands[y/band] = true
				}
			}
		}
	}
	for name := range colours {
		if hits[name] < 1000 {
			t.Errorf("run %s: %d pixels of its colour; its curves were not drawn", name, hits[name])
		}
	}
	// the runs table and headings take the first band or two; every band
	// below holds plots
	if len(drawnBands) < 18 {
		t.Errorf("curves in %d of 24 bands of 100 rows; want most of the page drawn", len(drawnBands))
	}
	if share := float64(nonWhite) / float64(b.Dx()*b.Dy()); share < 0.03 {
		t.Errorf("%.1f%% of the pixels are not white: the page looks empty", 100*share)
	}
	t.Logf("colour pixels %v, %d bands with curves, %.1f%% non-white", hits, len(drawnBands), 100*float64(nonWhite)/float64(b.Dx()*b.Dy()))
}

func rgb8(img image.Image, x, y int) (int, int, int) {
	switch m := img.(type) { // Chromium writes opaque 8-bit RGB(A): read it directly
	case *image.NRGBA:
		i := m.PixOffset(x, y)
		return int(m.Pix[i]), int(m.Pix[i+1]), int(m.Pix[i+2])
	case *image.RGBA:
		i := m.PixOffset(x, y)
		return int(m.Pix[i]), int(m.Pix[i+1]), int(m.Pix[i+2])
	}
	r, g, b, _ := img.At(x, y).RGBA()
	return int(r >> 8), int(g >> 8), int(b >> 8)
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
