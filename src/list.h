/*
 * list.h: the one intrusive doubly linked list every module links its
 * objects with (pending calls, watched sockets, idle connections, LRU
 * entries, waiters), instead of a hand-written unlink in each.
 *
 * A list is a circular ring through a sentinel `struct list` (the head) that
 * holds no object; each object embeds a `struct list` node and is found back
 * from it with list_entry. Every operation is a few pointer moves with no
 * allocation and no branch on "first" or "last": the head never moves, so a
 * node unlinks itself without knowing which list it is on (nginx's
 * ngx_queue_t, Linux's list_head). Names are lower-case functions: libevent
 * and <sys/queue.h> own the LIST_* macro names.
 *
 * Contract: a head is list_init()ed before any use, and must not move in
 * memory while nodes are linked (embed it; never realloc an array of heads).
 * A node is either linked or self-linked: list_init() it, or let list_remove
 * leave it so; list_remove on a self-linked node is then a no-op, and
 * list_linked tells which. A zeroed node is neither: link it first. Not
 * thread-safe: the owner of the list serialises every call.
 */
#ifndef BATON_LIST_H
#define BATON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *prev, *next;
};

/* The object of type `type` whose member `member` is the node `node`. */
#define list_entry(node, type, member) ((type *)(void *)(((char *)(node)) - offsetof(type, member)))

/*
 * Walks every node of `head` in order, from first to last; `pos` may be
 * list_remove()d (and freed) in the body, since `tmp` holds its successor.
 * Both are `struct list *` variables of the caller.
 */
#define list_for_each_safe(pos, tmp, head) \
    for ((pos) = (head)->next; (pos) != (head) && ((tmp) = (pos)->next, 1); (pos) = (tmp))

/* Makes `l` an empty head, or a self-linked (unlinked) node. */
static inline void list_init(struct list *l)
{
    l->prev = l->next = l;
}

static inline bool list_empty(const struct list *head)
{
    return head->next == head;
}

/* True while `n` is on a list (false once list_init()ed or list_remove()d). */
static inline bool list_linked(const struct list *n)
{
    return n->next != n;
}

/* Links `n` (not on any list) between two adjacent nodes. */
static inline void list_link_between_(struct list *prev, struct list *n, struct list *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* Links `n` (not on any list) first on `head`. */
static inline void list_push_front(struct list *head, struct list *n)
{
    list_link_between_(head, n, head->next);
}

/* Links `n` (not on any list) last on `head`. */
static inline void list_push_back(struct list *head, struct list *n)
{
    list_link_between_(head->prev, n, head);
}

/* Unlinks `n` from whatever list holds it and leaves it self-linked. */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* The first or the last node of `head`, or NULL when it is empty. */
static inline struct list *list_first(const struct list *head)
{
    return head->next == head ? NULL : head->next;
}

static inline struct list *list_last(const struct list *head)
{
    return head->prev == head ? NULL : head->prev;
}

/*
 * Makes `to` (a head that is empty or not yet initialised: whatever it held
 * is forgotten) hold every node of `from`, in order, and leaves `from` empty:
 * for draining a list whose callbacks may link new nodes onto the original
 * while the old ones are handled.
 */
static inline void list_move_all(struct list *to, struct list *from)
{
    if (list_empty(from)) {
        list_init(to);
        return;
    }
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    list_init(from);
}

#endif
