// Package subscribers is the one list of Epoch's subscribers: the
// projections the api reads back (always inline) and the movable
// subscribers, which run inline or in a worker as configuration says. The
// api, the worker, the HTTP layer, the tests and the bench read it, so a
// subscriber is added in its own package and one line of Movable.
//
// A movable subscriber gives its name (also its worker role, its queue
// catacloud.<name> and its label in metrics), its event types and its
// tables (dispatch.Rebuildable); the entry here is its constructor.
package subscribers

import (
	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/subscribers/storage"
)

// List is a set of movable subscribers, in the order they are run,
// declared and reported.
type List []dispatch.Subscriber

// Movable lists the movable subscribers. A new one is one line here.
func Movable() List {
	return List{
		storage.Subscriber{},
		billing.Subscriber{},
	}
}

// Projections lists the subscribers that always run inline: the rows the
// api reads back in the command's own answer.
func Projections() []dispatch.Subscriber {
	return []dispatch.Subscriber{projection.Subscriber{}}
}

// With is l and more after it: a test's own subscriber beside the real
// ones.
func (l List) With(more ...dispatch.Subscriber) List {
	return append(append(List{}, l...), more...)
}

// Names are the subscribers' names, in order.
func (l List) Names() []string {
	names := make([]string, len(l))
	for i, s := range l {
		names[i] = s.Name()
	}
	return names
}

// Subscriptions are the queues the broker declares for l: one per
// subscriber, bound to its event types.
func (l List) Subscriptions() []broker.Subscription {
	subs := make([]broker.Subscription, len(l))
	for i, s := range l {
		subs[i] = broker.Subscription{Name: s.Name(), EventTypes: s.EventTypes()}
	}
	return subs
}

// ByName finds a subscriber of l by its name.
func (l List) ByName(name string) (dispatch.Subscriber, bool) {
	for _, s := range l {
		if s.Name() == name {
			return s, true
		}
	}
	return nil, false
}

// RoleRelay is the worker role that publishes the outbox; every other role
// is a movable subscriber's name.
const RoleRelay = "relay"

// Roles are the worker roles: the relay, then each movable subscriber.
func Roles() []string {
	return append([]string{RoleRelay}, Movable().Names()...)
}
