package cli

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// maxPage is the most items the API gives in one page (?limit=).
const maxPage = 1000

// subscriberPath is the admin path of a subscriber: its name as a path
// segment, whatever the operator typed (an unknown one is the API's 404).
func subscriberPath(name string) string {
	return "/v1/admin/subscribers/" + url.PathEscape(name)
}

// pageQuery is ?limit=&cursor= for a list, the limit checked as the API
// checks it.
func pageQuery(limit int, cursor string) (string, error) {
	if limit < 1 || limit > maxPage {
		return "", usageError("--limit must be from 1 to %d, not %d", maxPage, limit)
	}
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return "?" + q.Encode(), nil
}

// get calls GET path and prints the answer: as it came with --json, else
// through table, which decodes it.
func (a *app) get(cmd *cobra.Command, path string, table func(answer) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ans, err := c.do(cmd.Context(), "GET", path, nil)
	if err != nil {
		return err
	}
	if a.json {
		a.printJSON(ans.body)
		return nil
	}
	return table(ans)
}

// send is get for a call with a body.
func (a *app) send(cmd *cobra.Command, method, path string, body any, table func(answer) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ans, err := c.do(cmd.Context(), method, path, body)
	if err != nil {
		return err
	}
	if a.json {
		a.printJSON(ans.body)
		return nil
	}
	return table(ans)
}

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The outbox and each subscriber (GET /v1/admin/status)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.get(cmd, "/v1/admin/status", func(ans answer) error {
				var st status
				if err := ans.decode(&st); err != nil {
					return err
				}
				a.statusTable(st)
				return nil
			})
		},
	}
}

func (a *app) deadLettersCmd() *cobra.Command {
	var limit int
	var cursor string
	list := &cobra.Command{
		Use:   "list SUBSCRIBER",
		Short: "A page of the subscriber's dead letters, oldest death first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := pageQuery(limit, cursor)
			if err != nil {
				return err
			}
			return a.get(cmd, subscriberPath(args[0])+"/dead-letters"+q, func(ans answer) error {
				var page deadLetterPage
				if err := ans.decode(&page); err != nil {
					return err
				}
				a.deadLetterTable(page)
				return nil
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, fmt.Sprintf("dead letters in the page (1 to %d)", maxPage))
	list.Flags().StringVar(&cursor, "cursor", "", "the page after the one that printed this cursor")

	var all bool
	replay := &cobra.Command{
		Use:   "replay SUBSCRIBER (EVENT_ID... | --all)",
		Short: "Hand the stored events of dead letters to that subscriber alone",
		Long: `Hands the stored events the dead letters name to that subscriber alone
(not to the others, not to outside consumers). An applied one leaves the list;
one that matches no stored event stays, with its reason. Prints how many left
the list.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids := args[1:]
			var body any
			switch {
			case all && len(ids) > 0:
				return usageError("give event ids or --all, not both")
			case all:
				body = map[string]bool{"all": true}
			case len(ids) == 0:
				return usageError("give the event ids to replay, or --all")
			case len(ids) > maxPage:
				return usageError("at most %d event ids at once, not %d; replay more in several calls", maxPage, len(ids))
			default:
				body = map[string][]string{"event_ids": ids}
			}
			return a.send(cmd, "POST", subscriberPath(args[0])+"/dead-letters/replay", body, func(ans answer) error {
				var out struct {
					Replayed int64 `json:"replayed"`
				}
				if err := ans.decode(&out); err != nil {
					return err
				}
				fmt.Fprintf(a.opts.Stdout, "replayed %d\n", out.Replayed)
				return nil
			})
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every dead letter of the subscriber")

	discard := &cobra.Command{
		Use:   "discard SUBSCRIBER EVENT_ID...",
		Short: "Discard dead letters for good (the first that fails stops the rest)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			for _, id := range args[1:] {
				path := subscriberPath(args[0]) + "/dead-letters/" + url.PathEscape(id)
				if _, err := c.do(cmd.Context(), "DELETE", path, nil); err != nil {
					return fmt.Errorf("discard %s: %w", id, err)
				}
				if !a.json { // 204: the API answers no JSON
					fmt.Fprintf(a.opts.Stdout, "discarded %s\n", id)
				}
			}
			return nil
		},
	}
	return group("dead-letters", "List, replay or discard a subscriber's dead letters", list, replay, discard)
}

func (a *app) redriveCmd() *cobra.Command {
	var from int64
	cmd := &cobra.Command{
		Use:   "redrive SUBSCRIBER --from POSITION",
		Short: "Hand a subscriber every stored event of its types from a position on, and follow it",
		Long: `Starts a redrive: every stored event of the subscriber's types with a
position at or above --from is handed to it again (what it already applied is
a no-op). It recovers lost messages and backfills a subscriber added later.
epochctl follows the operation to its end; exit 4 when it ends failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from < 0 {
				return usageError("--from must be a position ≥ 0, not %d", from)
			}
			return a.start(cmd, subscriberPath(args[0])+"/redrive", map[string]int64{"from_position": from}, false)
		},
	}
	cmd.Flags().Int64Var(&from, "from", 0, "the first position to hand over again (0: all)")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

func (a *app) rebuildCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rebuild SUBSCRIBER",
		Short: "Recompute a subscriber's rows from the event store and swap them in, and follow it",
		Long: `Starts a rebuild: the subscriber's rows are recomputed from the event store
beside the live ones while deliveries go on, compared, and swapped in once
caught up. epochctl follows the operation to its end; exit 4 when it ends
failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.start(cmd, subscriberPath(args[0])+"/rebuild", nil, false)
		},
	}
}

func (a *app) projectionsCmd() *cobra.Command {
	return group("projections", "Verify or rebuild the inline projections (files, jobs, job_files)", &cobra.Command{
		Use:   "verify",
		Short: "Rebuild the projections beside the live tables and count the differences; exit 5 when there are any",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.start(cmd, "/v1/admin/projections/rebuild", map[string]bool{"swap": false}, true)
		},
	}, &cobra.Command{
		Use:   "rebuild",
		Short: "Rebuild the projections and replace the live tables (commands keep landing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.start(cmd, "/v1/admin/projections/rebuild", map[string]bool{"swap": true}, false)
		},
	})
}

func (a *app) usersCmd() *cobra.Command {
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user; prints its id and its token (shown this once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.send(cmd, "POST", "/v1/users", map[string]string{"name": args[0]}, a.userTable)
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate-token USER_ID",
		Short: "Give a user a new token; the old one stops working within a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := uuid.Parse(args[0]); err != nil {
				return usageError("user id %q is not a UUID", args[0])
			}
			return a.send(cmd, "POST", "/v1/admin/users/"+args[0]+"/token", nil, a.userTable)
		},
	}
	return group("users", "Create users and rotate their tokens", create, rotate)
}

// decimal is a plain non-negative decimal, as the price book takes them.
var decimal = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// parseTiers reads --tier values: UP_TO_GB_HOURS=PRICE_PER_GB_HOUR for each
// tier but the last, PRICE_PER_GB_HOUR alone for the last.
func parseTiers(specs []string) ([]map[string]*string, error) {
	if len(specs) == 0 {
		return nil, usageError("give at least one --tier (the last, or only, one a price alone: --tier 0.00003)")
	}
	tiers := make([]map[string]*string, len(specs))
	for i, spec := range specs {
		upTo, price, bounded := strings.Cut(spec, "=")
		if !bounded {
			upTo, price = "", spec
		}
		last := i == len(specs)-1
		switch {
		case last && bounded:
			return nil, usageError("--tier %q: the last tier takes every GB-hour past the one before: give its price alone", spec)
		case !last && !bounded:
			return nil, usageError("--tier %q: every tier but the last is UP_TO_GB_HOURS=PRICE_PER_GB_HOUR", spec)
		case bounded && !decimal.MatchString(upTo):
			return nil, usageError("--tier %q: %q is not a decimal number of GB-hours", spec, upTo)
		case !decimal.MatchString(price):
			return nil, usageError("--tier %q: %q is not a decimal price", spec, price)
		}
		tier := map[string]*string{"up_to_gb_hours": nil, "price_per_gb_hour": &price}
		if bounded {
			tier["up_to_gb_hours"] = &upTo
		}
		tiers[i] = tier
	}
	return tiers, nil
}

// checkTime checks an RFC 3339 time flag before it is sent.
func checkTime(flag, value string) error {
	if value == "" {
		return usageError("--%s is required (RFC 3339, e.g. 2027-01-01T00:00:00Z)", flag)
	}
	if _, err := time.Parse(time.RFC3339Nano, value); err != nil {
		return usageError("--%s %q is not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z)", flag, value)
	}
	return nil
}

func (a *app) pricesCmd() *cobra.Command {
	var limit int
	var cursor string
	list := &cobra.Command{
		Use:   "list",
		Short: "Every price version, oldest first (GET /v1/admin/prices)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := pageQuery(limit, cursor)
			if err != nil {
				return err
			}
			return a.get(cmd, "/v1/admin/prices"+q, func(ans answer) error {
				var page pricePage
				if err := ans.decode(&page); err != nil {
					return err
				}
				a.priceTable(page.Items, page.NextCursor)
				return nil
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, fmt.Sprintf("versions in the page (1 to %d)", maxPage))
	list.Flags().StringVar(&cursor, "cursor", "", "the page after the one that printed this cursor")

	var effective, currency string
	var tierSpecs []string
	schedule := &cobra.Command{
		Use:   "schedule --effective-from TIME --currency CODE --tier [UP_TO=]PRICE...",
		Short: "Schedule a price version for the periods that start at or after --effective-from",
		Long: `Schedules a price version (POST /v1/admin/prices): graduated tiers over one
period's GB-hours. Each --tier but the last is UP_TO_GB_HOURS=PRICE_PER_GB_HOUR;
the last is PRICE_PER_GB_HOUR alone (it takes every GB-hour past the one
before). A free allowance is a first tier at price 0:

  epochctl prices schedule --effective-from 2027-01-01T00:00:00Z --currency USD \
    --tier 100=0 --tier 0.00003

--effective-from must lie ahead: a price change never reaches a period that
has begun (the api answers 409 effective_in_past).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTime("effective-from", effective); err != nil {
				return err
			}
			if currency == "" {
				return usageError("--currency is required (an ISO 4217 code such as USD)")
			}
			tiers, err := parseTiers(tierSpecs)
			if err != nil {
				return err
			}
			body := map[string]any{"effective_from": effective, "currency": currency, "tiers": tiers}
			return a.send(cmd, "POST", "/v1/admin/prices", body, func(ans answer) error {
				var v priceVersion
				if err := ans.decode(&v); err != nil {
					return err
				}
				a.priceTable([]priceVersion{v}, nil)
				return nil
			})
		},
	}
	schedule.Flags().StringVar(&effective, "effective-from", "", "when the version starts to price periods (RFC 3339)")
	schedule.Flags().StringVar(&currency, "currency", "", "ISO 4217 currency code (USD, EUR, JPY, ...)")
	schedule.Flags().StringArrayVar(&tierSpecs, "tier", nil, "a tier, in order: UP_TO_GB_HOURS=PRICE_PER_GB_HOUR, the last PRICE_PER_GB_HOUR alone")
	return group("prices", "The price book: list its versions, schedule a new one", list, schedule)
}

func (a *app) statementsCmd() *cobra.Command {
	var from, to string
	verifyCmd := &cobra.Command{
		Use:   "verify --from TIME --to TIME",
		Short: "Recompute the closed statements whose periods end in [from, to); exit 5 when any disagree",
		Long: `Starts a verify (POST /v1/admin/statements/verify): every closed statement
whose period ends in [--from, --to) is recomputed from the event store and the
price book alone; the operation's differences count those that disagree.
epochctl follows it to its end: exit 4 when it ends failed, 5 when it found
differences.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTime("from", from); err != nil {
				return err
			}
			if err := checkTime("to", to); err != nil {
				return err
			}
			return a.start(cmd, "/v1/admin/statements/verify", map[string]string{"from": from, "to": to}, true)
		},
	}
	verifyCmd.Flags().StringVar(&from, "from", "", "the first period end to verify (RFC 3339)")
	verifyCmd.Flags().StringVar(&to, "to", "", "the period end past the last to verify (RFC 3339)")
	return group("statements", "Check the billing statements", verifyCmd)
}
