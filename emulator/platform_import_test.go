package emulator

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// importOverHTTP calls POST /_emulator/import_authorizers with params.
func importOverHTTP(t *testing.T, base string, params url.Values) (int, []importedAuthorizer, string) {
	t.Helper()
	resp, err := http.Post(base+"/_emulator/import_authorizers?"+params.Encode(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var list []importedAuthorizer
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &list); err != nil {
			t.Fatalf("import answer is not the list: %v: %.200s", err, raw)
		}
	}
	return resp.StatusCode, list, string(raw)
}

// The control endpoint makes accounts that authorized the platform, named
// in order, answering what a proxy's import takes; their refresh tokens
// work, for that platform only, and a second import replaces them.
func TestImportAuthorizersControlEndpoint(t *testing.T) {
	emu, srv, _ := newPlatformEmu(t, Config{})
	status, list, raw := importOverHTTP(t, srv.URL, url.Values{"appid": {platformA}, "count": {"3"}, "prefix": {"wxbench"}})
	if status != http.StatusOK || len(list) != 3 {
		t.Fatalf("%d %s", status, raw)
	}
	for i, want := range []string{"wxbench00000000000", "wxbench00000000001", "wxbench00000000002"} {
		if list[i].AppID != want || list[i].RefreshToken == "" || emu.RefreshToken(platformA, want) != list[i].RefreshToken {
			t.Fatalf("entry %d: %+v, want %s with its current refresh token", i, list[i], want)
		}
		if emu.RefreshToken(platformB, want) != "" {
			t.Fatalf("%s authorized the other platform too", want)
		}
	}
	tok := componentToken(t, emu, srv, platformA)
	if a := refresh(t, srv, tok, platformA, list[1].AppID, list[1].RefreshToken); a.AuthorizerToken == "" {
		t.Fatalf("an imported refresh token is refused: %s", a.raw)
	}
	if a := post(t, listURL(srv, tok), map[string]any{"component_appid": platformA, "offset": 0, "count": 10}); a.Total != 3 {
		t.Fatalf("listed %d accounts, want 3: %s", a.Total, a.raw)
	}
	if st := emu.Stats(); st.AuthorizerCalls != 1 || st.AuthorizerIssued != 1 {
		t.Fatalf("importing counted as calls: %+v", st)
	}

	// Imported again: new refresh tokens, the earlier ones refused.
	_, again, _ := importOverHTTP(t, srv.URL, url.Values{"appid": {platformA}, "count": {"1"}, "prefix": {"wxbench"}})
	if len(again) != 1 || again[0].AppID != list[0].AppID || again[0].RefreshToken == list[0].RefreshToken {
		t.Fatalf("second import: %+v", again)
	}
	if a := refresh(t, srv, tok, platformA, list[0].AppID, list[0].RefreshToken); a.Errcode != 61023 {
		t.Fatalf("a replaced refresh token: %s", a.raw)
	}

	// The default prefix, and an index wider than 18 characters leave.
	_, named, _ := importOverHTTP(t, srv.URL, url.Values{"appid": {platformB}, "count": {"11"}, "prefix": {"wxlongprefix_0123456"}})
	if len(named) != 11 || named[10].AppID != "wxlongprefix_012345610" {
		t.Fatalf("long prefix: %+v", named)
	}
	_, plain, _ := importOverHTTP(t, srv.URL, url.Values{"appid": {platformB}, "count": {"1"}})
	if len(plain) != 1 || plain[0].AppID != "wxacct000000000000" {
		t.Fatalf("default prefix: %+v", plain)
	}

	for _, c := range []struct {
		name   string
		params url.Values
	}{
		{"unknown platform", url.Values{"appid": {"wxnobody"}, "count": {"1"}}},
		{"no count", url.Values{"appid": {platformA}}},
		{"zero", url.Values{"appid": {platformA}, "count": {"0"}}},
		{"too many", url.Values{"appid": {platformA}, "count": {"1000001"}}},
		{"prefix not an appid's", url.Values{"appid": {platformA}, "count": {"1"}, "prefix": {"wx/../"}}},
	} {
		if status, _, raw := importOverHTTP(t, srv.URL, c.params); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", c.name, status, raw)
		}
	}
	resp, err := http.Get(srv.URL + "/_emulator/import_authorizers?appid=" + platformA + "&count=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}
