package caddymodule

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"

	"github.com/caddy-wechat/caddy-wechat/caddymodule/credential"
	"github.com/caddy-wechat/caddy-wechat/caddymodule/token"
)

// `caddy wechat check` answers the first question of a deployment, before
// any traffic: can this host obtain every WeChat credential the config
// names? It must be safe to run on a production host at any time, so it
// changes nothing at WeChat: an Official Account's or Mini Program's token
// is asked of stable_token in normal mode (which hands out the current
// token, or the next one in its last minutes, as the running proxy would),
// never of /cgi-bin/token (each call of which ends the previous token) nor
// with force_refresh; a WeCom token of gettoken (which answers the current
// one); a platform's is read from the fleet's storage, never asked of
// api_component_token.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "wechat",
		Short: "Commands for the WeChat credentials of a config (caddy-wechat)",
		Long: `
Commands for the WeChat credentials that the wechat app and the wechat_*
handlers of a config hold.
`,
		CobraFunc: func(cmd *cobra.Command) {
			check := &cobra.Command{
				Use:   "check [--config <path>] [--adapter <name>]",
				Short: "Checks that this host can obtain every WeChat credential of a config",
				Long: `
Loads the config as 'caddy validate' does and, for every WeChat credential it
names, says whether this host can obtain it, one line each, without changing
anything at WeChat:

  - an Official Account or Mini Program (app_id, app_secret): POST
    {api_base}/cgi-bin/stable_token in normal mode, whichever token_api the
    config uses: it hands out the current token and never ends one;
  - a WeCom app (corp_id, corp_secret): GET {api_base}/cgi-bin/gettoken, which
    answers the current token;
  - a third-party platform: the age of the component_verify_ticket and the
    component_access_token in the config's storage (api_component_token is
    never called);
  - wechat_messages: that its token and encoding_aes_key are well-formed.

Placeholders ({env.*}, {file.*}) are expanded from this process's
environment, as Caddy would. Nothing secret is printed: no secret, token,
ticket or key. It exits 1 when any credential cannot be obtained. It checks
the credentials only: run 'caddy validate' for the rest of the config.
`,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdCheck),
			}
			check.Flags().StringP("config", "c", "", "Configuration file (default: the Caddyfile in the current directory)")
			check.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.AddCommand(check)
		},
	})
}

// cmdCheck is `caddy wechat check`.
func cmdCheck(fl caddycmd.Flags) (int, error) {
	config, file, _, err := caddycmd.LoadConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if config == nil {
		return caddy.ExitCodeFailedStartup, errors.New("no config to check: give --config (there is no Caddyfile in the current directory)")
	}
	config = caddy.RemoveMetaFields(config)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	store, err := configStorage(ctx, config)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	lines, err := checkCredentials(ctx, config, store, fetchClient)
	if err != nil {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("%s: %w", cmp.Or(file, "config"), err)
	}
	if len(lines) == 0 {
		// Most likely the wrong file: say so rather than pass.
		return caddy.ExitCodeFailedStartup, fmt.Errorf("%s names no WeChat credential: no wechat app component and no wechat_* handler", cmp.Or(file, "the config"))
	}
	if failed := writeCheck(os.Stdout, lines); failed > 0 {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("%d of %d WeChat credentials cannot be obtained from this host", failed, len(lines))
	}
	return caddy.ExitCodeSuccess, nil
}

// writeCheck prints the lines and a summary, and returns how many failed.
func writeCheck(w io.Writer, lines []checkLine) (failed int) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
		if !l.OK {
			failed++
		}
	}
	fmt.Fprintf(w, "%d of %d WeChat credentials OK\n", len(lines)-failed, len(lines))
	return failed
}

// storageConfig is the config's storage module, loaded as Caddy loads it.
type storageConfig struct {
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
}

// configStorage is the storage the config's instances share (its storage
// module, or Caddy's default: the file system under Caddy's data
// directory), made as `caddy storage export` makes it: where a platform's
// ticket and token are read.
func configStorage(ctx caddy.Context, config []byte) (certmagic.Storage, error) {
	var sc storageConfig
	if err := json.Unmarshal(config, &sc); err != nil {
		return nil, fmt.Errorf("decoding the config's storage: %w", err)
	}
	if len(sc.StorageRaw) == 0 || string(sc.StorageRaw) == "null" {
		return caddy.DefaultStorage, nil
	}
	val, err := ctx.LoadModule(&sc, "StorageRaw")
	if err != nil {
		return nil, fmt.Errorf("loading the storage module: %w", err)
	}
	store, err := val.(caddy.StorageConverter).CertMagicStorage()
	if err != nil {
		return nil, fmt.Errorf("creating the storage: %w", err)
	}
	return store, nil
}

// checkLine is the verdict on one credential of a config: whether this
// host can obtain it, and what it is or what stands in the way. Its text
// never holds a secret, token, ticket or key.
type checkLine struct {
	OK bool
	// Subject names the credential (its handlers and ID; empty when Detail
	// does); Detail says how long the token lasts, or why it cannot be had
	// and what to do.
	Subject, Detail string
}

// String is the line `caddy wechat check` prints. A line without a
// subject is an error that names its credential itself.
func (l checkLine) String() string {
	status := "OK  "
	if !l.OK {
		status = "FAIL"
	}
	if l.Subject == "" {
		return status + "  " + l.Detail
	}
	return status + "  " + l.Subject + ": " + l.Detail
}

// maxVerifyTicketAge is how long WeChat accepts a component_verify_ticket;
// it pushes a new one every 10 minutes.
const maxVerifyTicketAge = 12 * time.Hour

// checkStorageTimeout bounds the storage reads of a platform's check.
const checkStorageTimeout = 10 * time.Second

// Handlers naming WeChat credentials, by the name of their JSON "handler".
const (
	handlerToken     = "wechat_token"
	handlerValue     = "wechat_token_value"
	handlerJSSDK     = "wechat_jssdk"
	handlerMessages  = "wechat_messages"
	handlerComponent = "wechat_component_events"
)

// checkedApp is an app's token, however many handlers name it.
type checkedApp struct {
	directives []string
	label      string // "app_id wx..." or "corp_id ww...-<fingerprint>"
	tokenAPI   string // as configured: stable, classic, wecom
	spec       credential.Spec
}

// checkCredentials checks every WeChat credential the config (Caddy's
// JSON) names: the wechat app's platforms, and the app tokens of the
// wechat_token, wechat_token_value and wechat_jssdk handlers and the keys
// of wechat_messages anywhere in the HTTP app's routes. WeChat is called
// with client, only where nothing changes there (see the command's doc);
// a platform's ticket and token are read from store. The error is for a
// config that cannot be read; a credential that cannot be obtained is a
// failed line.
func checkCredentials(ctx context.Context, config []byte, store credential.Storage, client *http.Client) ([]checkLine, error) {
	var cfg struct {
		Apps struct {
			WeChat *App            `json:"wechat"`
			HTTP   json.RawMessage `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("decoding the config: %w", err)
	}
	handlers, err := findHandlers(cfg.Apps.HTTP)
	if err != nil {
		return nil, fmt.Errorf("decoding the http app: %w", err)
	}

	// In config order: the platforms by name, then the handlers' lines.
	// An app's line is filled in once every handler naming it is known.
	type entry struct {
		line checkLine
		app  *checkedApp
	}
	var entries []entry
	seen := map[string]bool{}
	add := func(l checkLine) {
		if !seen[l.String()] {
			seen[l.String()] = true
			entries = append(entries, entry{line: l})
		}
	}
	failed := func(subject string, err error) { add(checkLine{Subject: subject, Detail: err.Error()}) }

	// The platforms, each provisioned alone (one's error does not hide the
	// others') into one app, which the handlers then resolve against.
	app := &App{creds: credential.NewRegistry(client).NewConfig(store, nil)}
	receivedBy := map[string]bool{} // platforms some wechat_component_events receives
	for _, h := range handlers {
		var e ComponentEvents
		if handlerName(h) == handlerComponent && json.Unmarshal(h, &e) == nil {
			receivedBy[e.Component] = true
		}
	}
	var components map[string]*ComponentConfig
	if cfg.Apps.WeChat != nil {
		components = cfg.Apps.WeChat.Components
	}
	names := make([]string, 0, len(components))
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if components[name] == nil {
			failed("component "+name, errors.New("no configuration"))
			continue
		}
		one := &App{Components: map[string]*ComponentConfig{name: components[name]}, creds: app.creds}
		if err := one.provisionComponents(); err != nil {
			failed("", err) // it names the platform
			continue
		}
		add(checkPlatform(ctx, app.creds.Platform(name), receivedBy[name]))
	}

	byKey := map[string]*checkedApp{}
	for _, h := range handlers {
		directive := handlerName(h)
		switch directive {
		case handlerMessages:
			var m Messages
			if err := json.Unmarshal(h, &m); err != nil {
				failed(directive, err)
			} else {
				add(checkMessages(&m, app))
			}
			continue
		case handlerComponent:
			var e ComponentEvents
			if err := json.Unmarshal(h, &e); err != nil {
				failed(directive, err)
			} else if app.creds.Platform(e.Component) == nil {
				failed(directive, fmt.Errorf("no component %q in the wechat global option (or it is misconfigured: see its line)", e.Component))
			}
			continue
		case handlerToken, handlerValue, handlerJSSDK:
		default:
			continue
		}
		var o CredentialOptions
		if err := json.Unmarshal(h, &o); err != nil {
			failed(directive, err)
			continue
		}
		if o.Component != "" || o.Authorizer != "" {
			// A platform's credential: the platform's line covers it.
			if _, err := o.resolve(app, directive); err != nil {
				failed("", err) // it names the directive
			}
			continue
		}
		spec, err := o.spec()
		if err != nil {
			failed("", o.errorf(directive, err)) // the module's own error, naming the directive and app
			continue
		}
		// One line per credential as the module holds it, and per secret
		// and api_base: handlers that disagree are each checked.
		key := spec.Identity() + " " + token.SecretFingerprint(spec.ID, spec.Secret) + " " + spec.APIBase
		a := byKey[key]
		if a == nil {
			// Label tells a corp's apps apart by a fingerprint of the
			// secret, as the admin API and the metrics do.
			label := "app_id " + spec.Label()
			if o.wecom() {
				label = "corp_id " + spec.Label()
			}
			a = &checkedApp{label: label, tokenAPI: spec.Kind.Name, spec: spec}
			byKey[key] = a
			entries = append(entries, entry{app: a})
		}
		if !slices.Contains(a.directives, directive) {
			a.directives = append(a.directives, directive)
		}
	}

	// The apps' calls at once, a few at a time: each may take its
	// fetch_timeout when WeChat does not answer.
	var wg sync.WaitGroup
	limit := make(chan struct{}, 4)
	for i := range entries {
		if entries[i].app == nil {
			continue
		}
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			entries[i].line = checkApp(ctx, entries[i].app, client)
		})
	}
	wg.Wait()
	lines := make([]checkLine, len(entries))
	for i, e := range entries {
		lines[i] = e.line
	}
	return lines, nil
}

// handlerName is the "handler" of a handler's JSON object.
func handlerName(h json.RawMessage) string {
	var named struct {
		Handler string `json:"handler"`
	}
	_ = json.Unmarshal(h, &named) // findHandlers found it an object
	return named.Handler
}

// findHandlers returns every JSON object with a "handler" key in v, in
// the order of the config (routes in order, servers by name), those of
// nested subroutes and of any other module holding routes included.
func findHandlers(v json.RawMessage) ([]json.RawMessage, error) {
	var out []json.RawMessage
	var walk func(v json.RawMessage) error
	walk = func(v json.RawMessage) error {
		v = bytes.TrimSpace(v)
		if len(v) == 0 {
			return nil
		}
		switch v[0] {
		case '{':
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(v, &obj); err != nil {
				return err
			}
			if _, ok := obj["handler"]; ok {
				out = append(out, v)
			}
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if err := walk(obj[k]); err != nil {
					return err
				}
			}
		case '[':
			var arr []json.RawMessage
			if err := json.Unmarshal(v, &arr); err != nil {
				return err
			}
			for _, e := range arr {
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(v)
}
