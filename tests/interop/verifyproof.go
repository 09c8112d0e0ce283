// Check a C2SP tlog-proof with the Go reference code for transparency logs
// (golang.org/x/mod/sumdb/tlog and .../note), as an outsider's own tool would:
// the checkpoint carried in the proof must be signed by VKEY, and the entry's
// record hash must be included at the proof's index in the checkpoint's tree.
// Usage: verifyproof VKEY_FILE ENTRY_FILE PROOF_FILE. Exit 0 and one line when
// it checks; 1 when it does not; 2 on unreadable input.
package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(code int, msg string, args ...any) {
	fmt.Printf(msg+"\n", args...)
	os.Exit(code)
}

func main() {
	vkey, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(2, "cannot read key: %v", err)
	}
	entry, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(2, "cannot read entry: %v", err)
	}
	raw, err := os.ReadFile(os.Args[3])
	if err != nil {
		fail(2, "cannot read proof: %v", err)
	}
	head, checkpoint, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		fail(1, "no blank line before the checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		fail(1, "not a tlog-proof: %q", lines[0])
	}
	lines = lines[1:]
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		fail(1, "no index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil {
		fail(1, "bad index: %v", err)
	}
	var proof tlog.RecordProof
	for _, l := range lines[1:] {
		b, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(b) != tlog.HashSize {
			fail(1, "bad proof hash %q", l)
		}
		var h tlog.Hash
		copy(h[:], b)
		proof = append(proof, h)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		fail(2, "bad vkey: %v", err)
	}
	n, err := note.Open(checkpoint, note.VerifierList(v))
	if err != nil {
		fail(1, "checkpoint does not verify: %v", err)
	}
	body := strings.Split(n.Text, "\n")
	if len(body) < 4 || body[0] != v.Name() {
		fail(1, "checkpoint origin is not the key's name")
	}
	size, err := strconv.ParseInt(body[1], 10, 64)
	if err != nil {
		fail(1, "bad size: %v", err)
	}
	rb, err := base64.StdEncoding.DecodeString(body[2])
	if err != nil || len(rb) != tlog.HashSize {
		fail(1, "bad root")
	}
	var root tlog.Hash
	copy(root[:], rb)
	if err := tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(entry)); err != nil {
		fail(1, "not included: %v", err)
	}
	fmt.Printf("included %d of %d\n", index, size)
}
