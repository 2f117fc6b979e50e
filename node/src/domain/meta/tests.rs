//! Every directory rule, allowed and refused.

use super::*;
use stoa_proto::{CategoryChange, CategorySpec, PrincipalList, Role, RoomChange, RoomSpec};

const ADMIN: &str = "root";

fn code(r: Result<MetaOutcome, ApiError>) -> ErrorCode {
    r.expect_err("should be refused").code
}

/// A directory with an administrator and users ann, bob, cy (site "paris"), eve.
fn state() -> MetaState {
    let mut s = MetaState::default();
    let user = |by: Option<&str>, name: &str, admin| MetaCommand::CreateUser {
        by: by.map(String::from),
        name: name.into(),
        admin,
        token_digest: format!("d-{name}"),
    };
    s.apply(&user(None, ADMIN, true)).unwrap();
    for u in ["ann", "bob", "eve"] {
        s.apply(&user(Some(ADMIN), u, false)).unwrap();
    }
    s.apply(&MetaCommand::CreateUserAt {
        by: ADMIN.into(),
        name: "cy".into(),
        admin: false,
        token_digest: "d-cy".into(),
        site: Some("paris".into()),
    })
    .unwrap();
    s
}

fn cat(
    name: &str,
    allowed: &[Principal],
    denied: &[Principal],
    creators: &[Principal],
) -> MetaCommand {
    MetaCommand::Category {
        by: ADMIN.into(),
        op: CategoryOp::Create(CategorySpec {
            name: name.into(),
            description: String::new(),
            allowed: allowed.to_vec(),
            denied: denied.to_vec(),
            creators: creators.to_vec(),
            file_upload: false,
            invitations: true,
            chat_history: true,
        }),
    }
}

fn room_cmd(
    by: &str,
    name: &str,
    category: &str,
    privacy: Privacy,
    room_type: RoomType,
) -> MetaCommand {
    MetaCommand::Room {
        by: by.into(),
        op: RoomOp::Create(RoomSpec {
            name: name.into(),
            category: category.into(),
            description: String::new(),
            privacy,
            room_type,
            invitations: Invitations::Inherit,
            addin: None,
        }),
        shard: 1,
        shard_count: 4,
    }
}

fn room_op(by: &str, op: RoomOp) -> MetaCommand {
    MetaCommand::Room {
        by: by.into(),
        op,
        shard: 0,
        shard_count: 4,
    }
}

fn add_role(by: &str, room: &str, role: Role, user: &str) -> MetaCommand {
    room_op(
        by,
        RoomOp::AddRole {
            room: room.into(),
            role,
            user: user.into(),
        },
    )
}

fn user_p(u: &str) -> Principal {
    Principal::User(u.into())
}

fn access(s: &MetaState, user: &str, room: &str) -> RoomAccess {
    s.access(s.user(user).unwrap(), s.room(room).unwrap())
}

fn enable_chat(s: &mut MetaState) {
    s.apply(&MetaCommand::Policy {
        by: ADMIN.into(),
        scope: PolicyScope::Global,
        enabled: Some(true),
    })
    .unwrap();
}

/// Category "eng" allows everyone but eve; ann may create rooms.
fn eng() -> MetaState {
    let mut s = state();
    s.apply(&cat(
        "eng",
        &[Principal::Everyone],
        &[user_p("eve")],
        &[user_p("ann")],
    ))
    .unwrap();
    enable_chat(&mut s);
    s
}

#[test]
fn bootstrap_creates_only_the_first_admin() {
    let mut s = state();
    assert_eq!(s.user_by_token_digest("d-root").unwrap().name, ADMIN);
    let again = MetaCommand::CreateUser {
        by: None,
        name: "x".into(),
        admin: true,
        token_digest: "dx".into(),
    };
    assert_eq!(code(s.apply(&again)), ErrorCode::Forbidden);
}

#[test]
fn only_admins_create_users_and_names_are_unique() {
    let mut s = state();
    let mk = |by: &str, name: &str, d: &str| MetaCommand::CreateUser {
        by: Some(by.into()),
        name: name.into(),
        admin: false,
        token_digest: d.into(),
    };
    assert_eq!(code(s.apply(&mk("ann", "zed", "dz"))), ErrorCode::Forbidden);
    assert_eq!(
        code(s.apply(&mk(ADMIN, "ann", "dz"))),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(s.apply(&mk(ADMIN, "zed", "d-ann"))),
        ErrorCode::Invalid
    );
    assert_eq!(code(s.apply(&mk(ADMIN, "", "dz"))), ErrorCode::Invalid);
    assert!(s.user("zed").is_none());
}

#[test]
fn categories_are_admin_only_unique_and_removed_only_when_empty() {
    let mut s = eng();
    let by_ann = MetaCommand::Category {
        by: "ann".into(),
        op: CategoryOp::Remove { name: "eng".into() },
    };
    assert_eq!(code(s.apply(&by_ann)), ErrorCode::Forbidden);
    assert_eq!(
        code(s.apply(&cat("eng", &[], &[], &[]))),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(s.apply(&cat("x", &[user_p("ghost")], &[], &[]))),
        ErrorCode::NotFound
    );
    s.apply(&room_cmd(
        "ann",
        "r1",
        "eng",
        Privacy::Open,
        RoomType::Normal,
    ))
    .unwrap();
    let remove = MetaCommand::Category {
        by: ADMIN.into(),
        op: CategoryOp::Remove { name: "eng".into() },
    };
    assert_eq!(code(s.apply(&remove)), ErrorCode::Invalid);
    s.apply(&room_op(ADMIN, RoomOp::Delete { name: "r1".into() }))
        .unwrap();
    s.apply(&remove).unwrap();
    assert!(s.category("eng").is_none());
}

#[test]
fn category_switches_and_principals_change() {
    let mut s = eng();
    let upd = CategoryChange {
        file_upload: Some(true),
        chat_history: Some(false),
        ..Default::default()
    };
    s.apply(&MetaCommand::Category {
        by: ADMIN.into(),
        op: CategoryOp::Update {
            name: "eng".into(),
            change: upd,
        },
    })
    .unwrap();
    let c = s.category("eng").unwrap();
    assert!(c.file_upload && !c.chat_history && c.invitations);
    let add = |p| MetaCommand::Category {
        by: ADMIN.into(),
        op: CategoryOp::AddPrincipal {
            category: "eng".into(),
            list: PrincipalList::Creators,
            principal: p,
        },
    };
    s.apply(&add(user_p("bob"))).unwrap();
    assert!(s.category("eng").unwrap().creators.contains(&user_p("bob")));
    let rm = MetaCommand::Category {
        by: ADMIN.into(),
        op: CategoryOp::RemovePrincipal {
            category: "eng".into(),
            list: PrincipalList::Denied,
            principal: user_p("bob"),
        },
    };
    assert_eq!(code(s.apply(&rm)), ErrorCode::NotFound);
}

#[test]
fn denied_wins_over_allowed_also_through_groups() {
    let mut s = state();
    s.apply(&MetaCommand::Group {
        by: ADMIN.into(),
        op: GroupOp::Create { name: "ops".into() },
    })
    .unwrap();
    s.apply(&MetaCommand::Group {
        by: ADMIN.into(),
        op: GroupOp::AddMember {
            group: "ops".into(),
            member: user_p("bob"),
        },
    })
    .unwrap();
    s.apply(&cat(
        "c",
        &[Principal::Everyone],
        &[Principal::Group("ops".into())],
        &[],
    ))
    .unwrap();
    let c = s.category("c").unwrap();
    assert!(s.in_scope("ann", c));
    assert!(!s.in_scope("bob", c), "bob is denied through group ops");
}

#[test]
fn groups_nest_without_cycles_and_within_the_depth_limit() {
    let mut s = state();
    let g = |op| MetaCommand::Group {
        by: ADMIN.into(),
        op,
    };
    for name in ["a", "b", "c", "d", "e"] {
        s.apply(&g(GroupOp::Create { name: name.into() })).unwrap();
    }
    let nest = |outer: &str, inner: &str| {
        g(GroupOp::AddMember {
            group: outer.into(),
            member: Principal::Group(inner.into()),
        })
    };
    s.apply(&nest("a", "b")).unwrap();
    s.apply(&nest("b", "c")).unwrap();
    s.apply(&nest("c", "d")).unwrap();
    assert_eq!(code(s.apply(&nest("d", "a"))), ErrorCode::Invalid, "cycle");
    assert_eq!(
        code(s.apply(&nest("d", "e"))),
        ErrorCode::Invalid,
        "five deep"
    );
    s.apply(&g(GroupOp::AddMember {
        group: "d".into(),
        member: user_p("cy"),
    }))
    .unwrap();
    assert!(
        s.principals_of("cy")
            .contains(&Principal::Group("a".into())),
        "membership flows out through nesting"
    );
    assert_eq!(
        code(s.apply(&g(GroupOp::AddMember {
            group: "a".into(),
            member: Principal::Everyone
        }))),
        ErrorCode::Invalid
    );
    // A group named by a category cannot be deleted.
    s.apply(&cat("k", &[Principal::Group("a".into())], &[], &[]))
        .unwrap();
    assert_eq!(
        code(s.apply(&g(GroupOp::Delete { name: "a".into() }))),
        ErrorCode::Invalid
    );
    s.apply(&g(GroupOp::Delete { name: "e".into() })).unwrap();
}

#[test]
fn rooms_are_created_by_admins_and_creators_who_become_managers() {
    let mut s = eng();
    assert_eq!(
        code(s.apply(&room_cmd(
            "bob",
            "r",
            "eng",
            Privacy::Closed,
            RoomType::Normal
        ))),
        ErrorCode::Forbidden
    );
    s.apply(&room_cmd(
        "ann",
        "r",
        "eng",
        Privacy::Closed,
        RoomType::Normal,
    ))
    .unwrap();
    let r = s.room("r").unwrap();
    assert!(r.managers.contains("ann") && r.members.contains("ann"));
    assert_eq!(
        code(s.apply(&room_cmd(
            ADMIN,
            "r",
            "eng",
            Privacy::Open,
            RoomType::Normal
        ))),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(s.apply(&room_cmd(
            ADMIN,
            "s",
            "nope",
            Privacy::Open,
            RoomType::Normal
        ))),
        ErrorCode::NotFound
    );
    let long = "x".repeat(257);
    assert_eq!(
        code(s.apply(&room_cmd(
            ADMIN,
            &long,
            "eng",
            Privacy::Open,
            RoomType::Normal
        ))),
        ErrorCode::TooLarge
    );
    s.apply(&room_cmd(
        ADMIN,
        "adm",
        "eng",
        Privacy::Open,
        RoomType::Normal,
    ))
    .unwrap();
}

#[test]
fn open_closed_and_secret_rooms() {
    let mut s = eng();
    for (name, p) in [
        ("o", Privacy::Open),
        ("c", Privacy::Closed),
        ("s", Privacy::Secret),
    ] {
        s.apply(&room_cmd("ann", name, "eng", p, RoomType::Normal))
            .unwrap();
    }
    let bob_o = access(&s, "bob", "o");
    assert!(bob_o.find && bob_o.read && bob_o.post && !bob_o.see_members);
    let bob_c = access(&s, "bob", "c");
    assert!(bob_c.find && bob_c.see_members && !bob_c.read && !bob_c.post);
    let bob_s = access(&s, "bob", "s");
    assert!(!bob_s.find && !bob_s.see_members && !bob_s.read);
    s.apply(&add_role("ann", "s", Role::Member, "bob")).unwrap();
    let bob_s = access(&s, "bob", "s");
    assert!(bob_s.find && bob_s.read && bob_s.post && bob_s.see_members && !bob_s.manage);
    // eve is denied in the category: nothing at all, even in the open room.
    assert_eq!(access(&s, "eve", "o"), RoomAccess::default());
    assert_eq!(
        code(s.apply(&add_role("ann", "c", Role::Member, "eve"))),
        ErrorCode::Forbidden
    );
    // Managing a secret room you cannot see answers "not found", not "forbidden".
    assert_eq!(
        code(s.apply(&add_role("cy", "s", Role::Member, "cy"))),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(s.apply(&add_role("cy", "c", Role::Member, "cy"))),
        ErrorCode::Forbidden
    );
}

#[test]
fn auditoriums_let_only_presenters_post_and_normal_rooms_have_none() {
    let mut s = eng();
    s.apply(&room_cmd(
        "ann",
        "hall",
        "eng",
        Privacy::Open,
        RoomType::Auditorium,
    ))
    .unwrap();
    s.apply(&room_cmd(
        "ann",
        "chat",
        "eng",
        Privacy::Open,
        RoomType::Normal,
    ))
    .unwrap();
    let bob = access(&s, "bob", "hall");
    assert!(bob.read && !bob.post);
    s.apply(&add_role("ann", "hall", Role::Presenter, "bob"))
        .unwrap();
    assert!(access(&s, "bob", "hall").post);
    assert_eq!(
        code(s.apply(&add_role("ann", "chat", Role::Presenter, "bob"))),
        ErrorCode::Invalid
    );
    let to_normal = RoomChange {
        room_type: Some(RoomType::Normal),
        ..Default::default()
    };
    assert_eq!(
        code(s.apply(&room_op(
            "ann",
            RoomOp::Update {
                name: "hall".into(),
                change: to_normal.clone()
            }
        ))),
        ErrorCode::Invalid
    );
    s.apply(&room_op(
        "ann",
        RoomOp::RemoveRole {
            room: "hall".into(),
            role: Role::Presenter,
            user: "bob".into(),
        },
    ))
    .unwrap();
    s.apply(&room_op(
        "ann",
        RoomOp::Update {
            name: "hall".into(),
            change: to_normal,
        },
    ))
    .unwrap();
}

#[test]
fn disabled_rooms_cannot_be_found_or_read_but_managers_may_enable_them() {
    let mut s = eng();
    s.apply(&room_cmd(
        "ann",
        "r",
        "eng",
        Privacy::Open,
        RoomType::Normal,
    ))
    .unwrap();
    assert_eq!(
        code(s.apply(&room_op(
            "bob",
            RoomOp::SetDisabled {
                name: "r".into(),
                disabled: true
            }
        ))),
        ErrorCode::Forbidden
    );
    s.apply(&room_op(
        "ann",
        RoomOp::SetDisabled {
            name: "r".into(),
            disabled: true,
        },
    ))
    .unwrap();
    assert!(!access(&s, "bob", "r").find);
    let ann = access(&s, "ann", "r");
    assert!(ann.find && ann.manage && !ann.read);
    let admin = access(&s, ADMIN, "r");
    assert!(
        admin.find && admin.manage && !admin.read && !admin.post,
        "a disabled room is closed to everyone"
    );
    s.apply(&room_op(
        "ann",
        RoomOp::SetDisabled {
            name: "r".into(),
            disabled: false,
        },
    ))
    .unwrap();
    assert!(access(&s, "bob", "r").read);
    assert_eq!(
        code(s.apply(&room_op("ann", RoomOp::Delete { name: "r".into() }))),
        ErrorCode::Forbidden
    );
    s.apply(&room_op(ADMIN, RoomOp::Delete { name: "r".into() }))
        .unwrap();
    assert!(s.room("r").is_none());
}

#[test]
fn moving_a_room_drops_role_holders_the_new_category_does_not_allow() {
    let mut s = eng();
    s.apply(&cat(
        "small",
        &[user_p("ann"), user_p("cy")],
        &[],
        &[user_p("ann")],
    ))
    .unwrap();
    s.apply(&room_cmd(
        "ann",
        "r",
        "eng",
        Privacy::Closed,
        RoomType::Normal,
    ))
    .unwrap();
    s.apply(&add_role("ann", "r", Role::Member, "bob")).unwrap();
    s.apply(&add_role("ann", "r", Role::Member, "cy")).unwrap();
    assert_eq!(
        code(s.apply(&room_op(
            "bob",
            RoomOp::Move {
                name: "r".into(),
                category: "small".into()
            }
        ))),
        ErrorCode::Forbidden
    );
    s.apply(&room_op(
        "ann",
        RoomOp::Move {
            name: "r".into(),
            category: "small".into(),
        },
    ))
    .unwrap();
    let r = s.room("r").unwrap();
    assert_eq!(r.category, "small");
    assert!(r.members.contains("cy") && r.members.contains("ann") && !r.members.contains("bob"));
}

#[test]
fn policy_resolves_user_then_site_then_global_and_ships_disabled() {
    let mut s = state();
    let pol = |scope, enabled| MetaCommand::Policy {
        by: ADMIN.into(),
        scope,
        enabled,
    };
    let enabled = |s: &MetaState, u: &str| s.chat_enabled(s.user(u).unwrap());
    assert!(
        !enabled(&s, "ann") && !enabled(&s, "cy"),
        "global ships disabled"
    );
    assert!(
        enabled(&s, ADMIN),
        "administrators are not subject to the policy"
    );
    s.apply(&pol(PolicyScope::Global, Some(true))).unwrap();
    assert!(enabled(&s, "ann"));
    s.apply(&pol(PolicyScope::Site("paris".into()), Some(false)))
        .unwrap();
    assert!(!enabled(&s, "cy") && enabled(&s, "ann"));
    s.apply(&pol(PolicyScope::User("cy".into()), Some(true)))
        .unwrap();
    assert!(enabled(&s, "cy"));
    s.apply(&pol(PolicyScope::User("cy".into()), None)).unwrap();
    assert!(!enabled(&s, "cy"));
    assert_eq!(
        code(s.apply(&pol(PolicyScope::Global, None))),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(s.apply(&pol(PolicyScope::User("ghost".into()), Some(true)))),
        ErrorCode::NotFound
    );
    let by_ann = MetaCommand::Policy {
        by: "ann".into(),
        scope: PolicyScope::Global,
        enabled: Some(false),
    };
    assert_eq!(code(s.apply(&by_ann)), ErrorCode::Forbidden);
    // A disabled user can find an open room but not read or post.
    s.apply(&cat("c", &[Principal::Everyone], &[], &[]))
        .unwrap();
    s.apply(&room_cmd(ADMIN, "r", "c", Privacy::Open, RoomType::Normal))
        .unwrap();
    s.apply(&pol(PolicyScope::User("ann".into()), Some(false)))
        .unwrap();
    let a = access(&s, "ann", "r");
    assert!(a.find && !a.read && !a.post);
}

#[test]
fn settings_are_validated_and_applied() {
    let mut s = state();
    let set = |c| MetaCommand::Settings {
        by: ADMIN.into(),
        change: c,
    };
    s.apply(&set(SettingsChange {
        default_chat_history: Some(50),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(s.settings().default_chat_history, 50);
    assert_eq!(s.settings().max_file_size_kb, 20_000);
    assert_eq!(
        code(s.apply(&set(SettingsChange {
            default_chat_history: Some(501),
            ..Default::default()
        }))),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(s.apply(&set(SettingsChange {
            participant_update_limit: Some(0),
            ..Default::default()
        }))),
        ErrorCode::Invalid
    );
    let by_ann = MetaCommand::Settings {
        by: "ann".into(),
        change: SettingsChange::default(),
    };
    assert_eq!(code(s.apply(&by_ann)), ErrorCode::Forbidden);
}

#[test]
fn addins_need_unique_names_and_http_urls_and_attach_to_rooms() {
    let mut s = eng();
    let op = |op| MetaCommand::AddIn {
        by: ADMIN.into(),
        op,
    };
    s.apply(&op(AddInOp::Register {
        name: "wiki".into(),
        url: "https://wiki.example/x".into(),
    }))
    .unwrap();
    assert_eq!(
        code(s.apply(&op(AddInOp::Register {
            name: "wiki".into(),
            url: "https://a.b".into()
        }))),
        ErrorCode::AlreadyExists
    );
    for bad in [
        "ftp://x",
        "javascript:alert(1)",
        "https://",
        "http:///path",
        "https://a b",
    ] {
        assert_eq!(
            code(s.apply(&op(AddInOp::Register {
                name: "n".into(),
                url: bad.into()
            }))),
            ErrorCode::Invalid,
            "{bad}"
        );
    }
    s.apply(&room_cmd(
        "ann",
        "r",
        "eng",
        Privacy::Open,
        RoomType::Normal,
    ))
    .unwrap();
    let attach = |a: &str| RoomChange {
        addin: Some(Some(a.into())),
        ..Default::default()
    };
    assert_eq!(
        code(s.apply(&room_op(
            "ann",
            RoomOp::Update {
                name: "r".into(),
                change: attach("nope")
            }
        ))),
        ErrorCode::NotFound
    );
    s.apply(&room_op(
        "ann",
        RoomOp::Update {
            name: "r".into(),
            change: attach("wiki"),
        },
    ))
    .unwrap();
    assert_eq!(
        code(s.apply(&op(AddInOp::Remove {
            name: "wiki".into()
        }))),
        ErrorCode::Invalid,
        "attached"
    );
    s.apply(&op(AddInOp::Update {
        name: "wiki".into(),
        url: "http://wiki.local".into(),
    }))
    .unwrap();
}

#[test]
fn legacy_create_room_makes_an_open_room_in_the_default_category() {
    let mut s = state();
    let legacy = |name: &str, shard| MetaCommand::CreateRoom {
        by: "ann".into(),
        name: name.into(),
        description: String::new(),
        shard,
        shard_count: 4,
    };
    assert_eq!(code(s.apply(&legacy("x", 5))), ErrorCode::Invalid);
    assert!(
        s.category(DEFAULT_CATEGORY).is_none(),
        "a refusal changes nothing"
    );
    s.apply(&legacy("lobby", 1)).unwrap();
    let r = s.room("lobby").unwrap();
    assert_eq!(
        (r.category.as_str(), r.privacy, r.id),
        (DEFAULT_CATEGORY, Privacy::Open, 1)
    );
    assert_eq!(code(s.apply(&legacy("lobby", 1))), ErrorCode::AlreadyExists);
}

#[test]
fn shards_spread_and_stay_in_range() {
    let mut seen = [0u32; 5];
    for i in 0..1000 {
        let sh = shard_for_room(&format!("room-{i}"), 4);
        assert!((1..=4).contains(&sh));
        seen[sh as usize] += 1;
    }
    assert!(seen[1..].iter().all(|&n| n > 150), "{seen:?}");
}

#[test]
fn new_members_get_an_invitation_when_the_room_and_category_allow_it() {
    let mut s = eng();
    s.apply(&room_cmd(
        "ann",
        "r",
        "eng",
        Privacy::Closed,
        RoomType::Normal,
    ))
    .unwrap();
    s.apply(&room_cmd(
        "ann",
        "quiet",
        "eng",
        Privacy::Closed,
        RoomType::Normal,
    ))
    .unwrap();
    let off = RoomChange {
        invitations: Some(Invitations::Off),
        ..Default::default()
    };
    s.apply(&room_op(
        "ann",
        RoomOp::Update {
            name: "quiet".into(),
            change: off,
        },
    ))
    .unwrap();
    s.apply(&add_role("ann", "r", Role::Member, "bob")).unwrap();
    s.apply(&add_role("ann", "quiet", Role::Member, "bob"))
        .unwrap();
    let take = MetaCommand::TakeInvitations { by: "bob".into() };
    assert_eq!(
        s.apply(&take).unwrap(),
        MetaOutcome::Invitations(vec!["r".into()])
    );
    assert_eq!(
        s.apply(&take).unwrap(),
        MetaOutcome::Invitations(vec![]),
        "cleared once seen"
    );
    // A category with invitations off sends none either.
    let cat_off = CategoryChange {
        invitations: Some(false),
        ..Default::default()
    };
    s.apply(&MetaCommand::Category {
        by: ADMIN.into(),
        op: CategoryOp::Update {
            name: "eng".into(),
            change: cat_off,
        },
    })
    .unwrap();
    s.apply(&add_role("ann", "r", Role::Member, "cy")).unwrap();
    assert_eq!(
        s.apply(&MetaCommand::TakeInvitations { by: "cy".into() })
            .unwrap(),
        MetaOutcome::Invitations(vec![])
    );
}

#[test]
fn followed_rooms_need_read_access_and_markers_only_move_forward() {
    let mut s = eng();
    s.apply(&room_cmd(
        "ann",
        "open",
        "eng",
        Privacy::Open,
        RoomType::Normal,
    ))
    .unwrap();
    s.apply(&room_cmd(
        "ann",
        "closed",
        "eng",
        Privacy::Closed,
        RoomType::Normal,
    ))
    .unwrap();
    s.apply(&room_cmd(
        "ann",
        "secret",
        "eng",
        Privacy::Secret,
        RoomType::Normal,
    ))
    .unwrap();
    let follow = |room: &str, follow| MetaCommand::Follow {
        by: "bob".into(),
        room: room.into(),
        follow,
    };
    s.apply(&follow("open", true)).unwrap();
    assert_eq!(code(s.apply(&follow("closed", true))), ErrorCode::Forbidden);
    assert_eq!(code(s.apply(&follow("secret", true))), ErrorCode::NotFound);
    let mark = |seq| MetaCommand::MarkRead {
        by: "bob".into(),
        room: "open".into(),
        seq,
    };
    s.apply(&mark(7)).unwrap();
    s.apply(&mark(3)).unwrap();
    assert_eq!(
        s.followed("bob").collect::<Vec<_>>(),
        vec![(&"open".to_string(), &7)]
    );
    assert_eq!(
        code(s.apply(&MetaCommand::MarkRead {
            by: "bob".into(),
            room: "closed".into(),
            seq: 1
        })),
        ErrorCode::NotFound
    );
    s.apply(&follow("open", false)).unwrap();
    assert_eq!(s.followed("bob").count(), 0);
    assert_eq!(code(s.apply(&follow("open", false))), ErrorCode::NotFound);
}

#[test]
fn only_changes_that_can_only_grant_skip_the_shard_fence() {
    use stoa_proto::{CategoryOp as C, GroupOp as G, PolicyScope, RoomOp as R};
    let by = || ADMIN.to_string();
    let category = |op| MetaCommand::Category { by: by(), op };
    let group = |op| MetaCommand::Group { by: by(), op };
    let user = || Principal::User("ann".into());
    let revoking = [
        room_op(
            ADMIN,
            R::RemoveRole {
                room: "r".into(),
                role: Role::Member,
                user: "ann".into(),
            },
        ),
        room_op(
            ADMIN,
            R::SetDisabled {
                name: "r".into(),
                disabled: true,
            },
        ),
        room_op(ADMIN, R::Delete { name: "r".into() }),
        room_op(
            ADMIN,
            R::Move {
                name: "r".into(),
                category: "c".into(),
            },
        ),
        room_op(
            ADMIN,
            R::Update {
                name: "r".into(),
                change: RoomChange::default(),
            },
        ),
        category(C::AddPrincipal {
            category: "c".into(),
            list: PrincipalList::Denied,
            principal: user(),
        }),
        category(C::RemovePrincipal {
            category: "c".into(),
            list: PrincipalList::Allowed,
            principal: user(),
        }),
        category(C::Update {
            name: "c".into(),
            change: CategoryChange::default(),
        }),
        group(G::RemoveMember {
            group: "g".into(),
            member: user(),
        }),
        group(G::Delete { name: "g".into() }),
        // A category may deny the group.
        group(G::AddMember {
            group: "g".into(),
            member: user(),
        }),
        MetaCommand::Policy {
            by: by(),
            scope: PolicyScope::Global,
            enabled: Some(false),
        },
    ];
    for cmd in &revoking {
        assert!(cmd.may_revoke_access(), "{cmd:?}");
    }
    let granting = [
        room_op(
            ADMIN,
            R::AddRole {
                room: "r".into(),
                role: Role::Member,
                user: "ann".into(),
            },
        ),
        room_op(
            ADMIN,
            R::SetDisabled {
                name: "r".into(),
                disabled: false,
            },
        ),
        category(C::AddPrincipal {
            category: "c".into(),
            list: PrincipalList::Allowed,
            principal: user(),
        }),
        category(C::RemovePrincipal {
            category: "c".into(),
            list: PrincipalList::Denied,
            principal: user(),
        }),
        MetaCommand::Follow {
            by: "ann".into(),
            room: "r".into(),
            follow: true,
        },
        MetaCommand::MarkRead {
            by: "ann".into(),
            room: "r".into(),
            seq: 3,
        },
    ];
    for cmd in &granting {
        assert!(!cmd.may_revoke_access(), "{cmd:?}");
    }
}

#[test]
fn the_last_revoking_index_is_kept_only_for_applied_revoking_changes() {
    let mut s = state();
    assert_eq!(s.revoked_at(), 0);
    s.apply_at(7, &cat("c", &[Principal::Everyone], &[], &[]))
        .unwrap();
    assert_eq!(s.revoked_at(), 0, "creating grants nothing away");
    let deny = MetaCommand::Category {
        by: ADMIN.into(),
        op: stoa_proto::CategoryOp::AddPrincipal {
            category: "c".into(),
            list: PrincipalList::Denied,
            principal: Principal::User("ann".into()),
        },
    };
    s.apply_at(9, &deny).unwrap();
    assert_eq!(s.revoked_at(), 9);
    // Refused: nothing changed, nothing to fence.
    let elsewhere = MetaCommand::Category {
        by: ADMIN.into(),
        op: stoa_proto::CategoryOp::Remove {
            name: "no-such-category".into(),
        },
    };
    assert!(s.apply_at(12, &elsewhere).is_err());
    assert_eq!(s.revoked_at(), 9);
}
