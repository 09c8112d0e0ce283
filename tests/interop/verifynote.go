// Verify a signed note with the Go reference implementation of C2SP signed
// notes (golang.org/x/mod/sumdb/note), as a court's or a witness operator's
// own tool would. Usage: verifynote VKEY_FILE NOTE_FILE. Exit 0 and one line
// when a signature by VKEY verifies; 1 when it does not; 2 on a bad key.
package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	vkey, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Println("cannot read key:", err)
		os.Exit(2)
	}
	msg, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Println("cannot read note:", err)
		os.Exit(2)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		fmt.Println("bad vkey:", err)
		os.Exit(2)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		fmt.Println("does not verify:", err)
		os.Exit(1)
	}
	fmt.Printf("verified %d unverified %d\n", len(n.Sigs), len(n.UnverifiedSigs))
}
