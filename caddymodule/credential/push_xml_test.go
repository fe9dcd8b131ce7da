package credential

import (
	"slices"
	"testing"
)

var flatFieldNames = []string{"MsgId", "FromUserName", "CreateTime", "Event", "Encrypt", "Count"}

// The scanner reads WeChat's messages itself, and leaves to encoding/xml
// what it does not follow.
func TestRootFields(t *testing.T) {
	for doc, want := range map[string][]string{
		"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>24000000000000001</MsgId></xml>":                         {"24000000000000001", "o1", "1700000000", "", "", ""},
		"<xml>\n  <FromUserName><![CDATA[o1]]></FromUserName>\n  <CreateTime>7</CreateTime>\n  <Event><![CDATA[pic_sysphoto]]></Event>\n  <SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum><![CDATA[abc]]></PicMd5Sum></item></PicList></SendPicsInfo>\n</xml>\n": {"", "o1", "7", "pic_sysphoto", "", ""},
		"<xml><Encrypt><![CDATA[a+b/c==]]></Encrypt><Event/></xml>":                  {"", "", "", "", "a+b/c==", ""},
		"<xml><Count>1</Count><Count>2</Count></xml>":                                {"", "", "", "", "", "2"},
		"<xml><Event>a<![CDATA[b]]>c<x>nested</x>d</Event></xml>":                    {"", "", "", "abcd", "", ""},
		"<xml><Content><![CDATA[<MsgId>1</MsgId>]]></Content><MsgId>2</MsgId></xml>": {"2", "", "", "", "", ""},
		"<xml><FromUserName>中文</FromUserName></xml>":                                 {"", "中文", "", "", "", ""},
	} {
		got := make([]string, len(flatFieldNames))
		if !rootFields([]byte(doc), flatFieldNames, got) {
			t.Errorf("%q: not scanned", doc)
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: %q, want %q", doc, got, want)
		}
		xmlRootFields([]byte(doc), flatFieldNames, got)
		if !slices.Equal(got, want) {
			t.Errorf("%q: encoding/xml reads %q, want %q (the test is wrong)", doc, got, want)
		}
	}
	for _, doc := range []string{
		`<xml><Event a="1">x</Event></xml>`,                  // an attribute
		"<xml><Event>a&amp;b</Event></xml>",                  // an entity
		"<?xml version=\"1.0\"?><xml><Event>a</Event></xml>", // a prolog
		"<xml><!-- c --><Event>a</Event></xml>",              // a comment
		"<xml><Event>a\r\nb</Event></xml>",                   // a carriage return to normalize
		"<xml><x:Event>a</x:Event></xml>",                    // a namespace
		"<xml><Event>a</Event>",                              // never closed
		"<xml><Event>a</Even></xml>",                         // mismatched
		"<xml></xml><xml></xml>",                             // two roots
		"<xml><Event>\xff</Event></xml>",                     // not UTF-8
		"",
	} {
		got := make([]string, len(flatFieldNames))
		if rootFields([]byte(doc), flatFieldNames, got) {
			t.Errorf("%q: scanned (%q), should go to encoding/xml", doc, got)
		}
	}
}

// FuzzFlatFields: whatever the scanner reads, encoding/xml reads alike.
func FuzzFlatFields(f *testing.F) {
	for _, seed := range []string{
		"<xml><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>7</CreateTime><MsgId>1</MsgId></xml>",
		"<xml><Event>a<![CDATA[b]]>c<x>n</x>d</Event><SendPicsInfo><Count>1</Count></SendPicsInfo></xml>",
		"<xml><Encrypt><![CDATA[a+b/c==]]></Encrypt><Event/></xml>",
		"<a><b><c/></b><Count>\t</Count></a>",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		scanned := make([]string, len(flatFieldNames))
		if !rootFields(doc, flatFieldNames, scanned) {
			return
		}
		parsed := make([]string, len(flatFieldNames))
		xmlRootFields(doc, flatFieldNames, parsed)
		if !slices.Equal(scanned, parsed) {
			t.Fatalf("%q: scanned %q, encoding/xml %q", doc, scanned, parsed)
		}
	})
}
