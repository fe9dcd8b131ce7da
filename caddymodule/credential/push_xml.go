package credential

import (
	"bytes"
	"encoding/xml"
	"unicode/utf8"
)

// WeChat's XML messages are flat: <xml><Name>text</Name><Name><![CDATA[
// text]]></Name>…</xml>, a few children of the root holding text, some
// holding elements of their own (SendPicsInfo, ScanCodeInfo). encoding/xml
// reads them at a cost comparable to the rest of a push's work together
// (a token and allocations per element), so they are scanned here, and
// anything this scanner does not follow exactly as encoding/xml would (an
// attribute, an entity, a namespace, a comment, a prolog) goes to
// encoding/xml instead. FuzzFlatFields holds the two to the same answers.

// rootFields sets out[i] to the character data of the root element's
// last child named names[i] (as encoding/xml's DecodeElement into a
// string gives it: the child's own text and CDATA, not its children's),
// and reports whether it could: false leaves out unspecified, and the
// document is to be read with encoding/xml.
func rootFields(doc []byte, names []string, out []string) bool {
	for i := range out {
		out[i] = ""
	}
	var (
		stack   [][]byte // open elements' names
		capture = -1     // index in names of the root's child being read
		text    []byte   // its text so far: the first segment of it, in doc
		joined  bool     // text is a copy, holding more than one segment
	)
	// Most values are one segment, given as a string without an
	// intermediate copy; more are joined in a buffer of their own.
	add := func(seg []byte) {
		switch {
		case text == nil:
			text = seg
		case !joined:
			text, joined = append(append(make([]byte, 0, len(text)+len(seg)), text...), seg...), true
		default:
			text = append(text, seg...)
		}
	}
	i := skipSpace(doc, 0)
	for i < len(doc) {
		if doc[i] != '<' {
			j := bytes.IndexByte(doc[i:], '<')
			if j < 0 {
				j = len(doc) - i
			}
			seg := doc[i : i+j]
			if len(stack) == 0 || !plainText(seg) {
				return false // text outside the root, an entity, a character encoding/xml refuses
			}
			if capture >= 0 && len(stack) == 2 {
				add(seg)
			}
			i += j
			continue
		}
		rest := doc[i:]
		switch {
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			end := bytes.Index(rest, []byte("]]>"))
			if end < 0 || len(stack) == 0 {
				return false
			}
			data := rest[len("<![CDATA["):end]
			if !validChars(data) {
				return false
			}
			if capture >= 0 && len(stack) == 2 {
				add(data)
			}
			i += end + len("]]>")
		case bytes.HasPrefix(rest, []byte("</")):
			name, n := scanName(rest[2:])
			if n == 0 || 2+n >= len(rest) || rest[2+n] != '>' || len(stack) == 0 || !bytes.Equal(stack[len(stack)-1], name) {
				return false
			}
			stack = stack[:len(stack)-1]
			i += 2 + n + 1
			if len(stack) == 1 && capture >= 0 {
				out[capture] = string(text)
				capture, text, joined = -1, nil, false
			}
			if len(stack) == 0 {
				return skipSpace(doc, i) == len(doc) // one root, nothing after it
			}
		default:
			name, n := scanName(rest[1:])
			if n == 0 || 1+n >= len(rest) {
				return false
			}
			selfClosing := rest[1+n] == '/'
			switch {
			case rest[1+n] == '>':
				i += 1 + n + 1
			case selfClosing && 2+n < len(rest) && rest[2+n] == '>':
				i += 1 + n + 2
			default:
				return false // attributes, or not a tag
			}
			if len(stack) == 1 {
				capture = -1
				for k, want := range names {
					if string(name) == want {
						capture = k
					}
				}
				if selfClosing && capture >= 0 {
					out[capture] = ""
					capture = -1
				}
			}
			if !selfClosing {
				stack = append(stack, name)
			}
		}
	}
	return false // the root never closed
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n') {
		i++
	}
	return i
}

// scanName reads an element name of the plain kind WeChat uses (no
// namespace prefix), returning its length, 0 if there is none.
func scanName(b []byte) ([]byte, int) {
	n := 0
	for n < len(b) {
		c := b[n]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (n == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.')) {
			break
		}
		n++
	}
	return b[:n], n
}

// plainText: character data that encoding/xml would give back unchanged
// (no entity, no carriage return to normalize) and accept (no "]]>").
func plainText(b []byte) bool {
	return bytes.IndexByte(b, '&') < 0 && !bytes.Contains(b, []byte("]]>")) && validChars(b)
}

// validChars: UTF-8 of characters XML allows, without \r (which
// encoding/xml rewrites).
func validChars(b []byte) bool {
	// Printable ASCII, nearly all of WeChat's XML (the Encrypt field's
	// base64 whole), is checked a byte at a time without decoding.
	i := 0
	for i < len(b) && b[i] >= 0x20 && b[i] < utf8.RuneSelf {
		i++
	}
	b = b[i:]
	for len(b) > 0 {
		c := b[0]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' {
				return false
			}
			b = b[1:]
			continue
		}
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 || r > 0xD7FF && r < 0xE000 || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		b = b[size:]
	}
	return true
}

// xmlRootFields is rootFields by encoding/xml, for what the scanner does
// not follow: the text of the root's children, the last of each name,
// until the end of the document or its first error.
func xmlRootFields(doc []byte, names []string, out []string) {
	for i := range out {
		out[i] = ""
	}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 2 {
				var v string
				if err := dec.DecodeElement(&v, &t); err == nil {
					for k, want := range names {
						if t.Name.Local == want {
							out[k] = v
						}
					}
				}
				depth--
			}
		case xml.EndElement:
			depth--
		}
	}
}

// readRootFields is rootFields, by encoding/xml where the scanner cannot.
func readRootFields(doc []byte, names []string, out []string) {
	if !rootFields(doc, names, out) {
		xmlRootFields(doc, names, out)
	}
}
