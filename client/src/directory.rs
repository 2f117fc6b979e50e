//! The directory requests of [`Client`]: users with a site, categories, rooms and their roles,
//! groups, the chat policy, cluster settings and add-ins.
//!
//! Changes are decided by the cluster's meta group and answer once applied there; a read sent
//! right after to another node (or to a node that forwarded the change) may not see it yet.
//! Reads answer from the node's replica and show only what this user may see: a secret room is
//! "not found" to a non-member, exactly like a room that does not exist. None of these requests is
//! retried on connection loss.

use crate::session::unexpected;
use crate::{Client, ClientError, Result, RoomInfo};
use stoa_proto::{
    AddInInfo, AddInOp, CategoryChange, CategoryInfo, CategoryOp, CategorySpec, ClusterSettings,
    ConfigOp, GroupInfo, GroupOp, PolicyInfo, PolicyOp, PolicyScope, Principal, PrincipalList,
    Request, Response, Role, RoomChange, RoomDetail, RoomFilter, RoomOp, RoomSpec, SettingsChange,
};

impl Client {
    /// Sends a change that answers `Done`.
    async fn change(&self, request: Request) -> Result<()> {
        match self.shared().call(request, None).await? {
            Response::Done => Ok(()),
            other => Err(ClientError::Protocol(unexpected("Done", &other))),
        }
    }

    /// Creates a user (administrators only) at `site`, which the chat policy may enable or
    /// disable as a whole; answers the new user's token.
    pub async fn create_user_at(
        &self,
        name: &str,
        admin: bool,
        site: Option<&str>,
    ) -> Result<String> {
        let request = Request::CreateUserAt {
            name: name.to_string(),
            admin,
            site: site.map(str::to_string),
        };
        match self.shared().call(request, None).await? {
            Response::UserCreated { token, .. } => Ok(token),
            other => Err(ClientError::Protocol(unexpected("UserCreated", &other))),
        }
    }

    /// Creates a category (administrators only).
    pub async fn category_create(&self, spec: CategorySpec) -> Result<()> {
        self.change(Request::Category(CategoryOp::Create(spec)))
            .await
    }

    /// Changes a category's description or switches (administrators only).
    pub async fn category_update(&self, name: &str, change: CategoryChange) -> Result<()> {
        self.change(Request::Category(CategoryOp::Update {
            name: name.to_string(),
            change,
        }))
        .await
    }

    /// Removes a category that holds no room (administrators only).
    pub async fn category_remove(&self, name: &str) -> Result<()> {
        self.change(Request::Category(CategoryOp::Remove {
            name: name.to_string(),
        }))
        .await
    }

    /// Adds `principal` to (or, with `add: false`, removes it from) one of a category's lists
    /// (administrators only). Denied wins over allowed.
    pub async fn category_principal(
        &self,
        category: &str,
        list: PrincipalList,
        principal: Principal,
        add: bool,
    ) -> Result<()> {
        let category = category.to_string();
        let op = if add {
            CategoryOp::AddPrincipal {
                category,
                list,
                principal,
            }
        } else {
            CategoryOp::RemovePrincipal {
                category,
                list,
                principal,
            }
        };
        self.change(Request::Category(op)).await
    }

    /// The categories this user is in scope of (every one for an administrator), with the number
    /// of rooms in each that this user may see.
    pub async fn categories(&self) -> Result<Vec<CategoryInfo>> {
        match self
            .shared()
            .call(Request::Category(CategoryOp::List), None)
            .await?
        {
            Response::Categories(c) => Ok(c),
            other => Err(ClientError::Protocol(unexpected("Categories", &other))),
        }
    }

    /// Creates a room in a category (administrators and the category's creators; a creator in
    /// the category's scope becomes its manager and member).
    pub async fn room_create(&self, spec: RoomSpec) -> Result<RoomInfo> {
        match self
            .shared()
            .call(Request::Room(RoomOp::Create(spec)), None)
            .await?
        {
            Response::RoomCreated(info) => Ok(info),
            other => Err(ClientError::Protocol(unexpected("RoomCreated", &other))),
        }
    }

    /// Changes a room's settings (its managers and administrators).
    pub async fn room_update(&self, name: &str, change: RoomChange) -> Result<()> {
        self.change(Request::Room(RoomOp::Update {
            name: name.to_string(),
            change,
        }))
        .await
    }

    /// Disables a room (everyone is disconnected from it, joins are refused) or enables it again.
    pub async fn room_set_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        self.change(Request::Room(RoomOp::SetDisabled {
            name: name.to_string(),
            disabled,
        }))
        .await
    }

    /// Moves a room to another category; role holders the new category does not admit are dropped.
    pub async fn room_move(&self, name: &str, category: &str) -> Result<()> {
        self.change(Request::Room(RoomOp::Move {
            name: name.to_string(),
            category: category.to_string(),
        }))
        .await
    }

    /// Deletes a room (administrators only).
    pub async fn room_delete(&self, name: &str) -> Result<()> {
        self.change(Request::Room(RoomOp::Delete {
            name: name.to_string(),
        }))
        .await
    }

    /// Gives `user` a role in `room` (or, with `add: false`, takes it away).
    pub async fn room_role(&self, room: &str, role: Role, user: &str, add: bool) -> Result<()> {
        let (room, user) = (room.to_string(), user.to_string());
        let op = if add {
            RoomOp::AddRole { room, role, user }
        } else {
            RoomOp::RemoveRole { room, role, user }
        };
        self.change(Request::Room(op)).await
    }

    /// A room as this user may see it (role lists only for those allowed to see members).
    pub async fn room_show(&self, name: &str) -> Result<RoomDetail> {
        let request = Request::Room(RoomOp::Show {
            name: name.to_string(),
        });
        match self.shared().call(request, None).await? {
            Response::RoomDetail(d) => Ok(d),
            other => Err(ClientError::Protocol(unexpected("RoomDetail", &other))),
        }
    }

    /// The rooms this user may find that match every given filter.
    pub async fn room_search(&self, filter: RoomFilter) -> Result<Vec<RoomDetail>> {
        match self
            .shared()
            .call(Request::Room(RoomOp::Search(filter)), None)
            .await?
        {
            Response::RoomDetails(d) => Ok(d),
            other => Err(ClientError::Protocol(unexpected("RoomDetails", &other))),
        }
    }

    /// Creates an empty user group (administrators only).
    pub async fn group_create(&self, name: &str) -> Result<()> {
        self.change(Request::Group(GroupOp::Create {
            name: name.to_string(),
        }))
        .await
    }

    /// Deletes a group no category names (administrators only).
    pub async fn group_delete(&self, name: &str) -> Result<()> {
        self.change(Request::Group(GroupOp::Delete {
            name: name.to_string(),
        }))
        .await
    }

    /// Adds a user or a group to `group` (or, with `add: false`, removes it).
    pub async fn group_member(&self, group: &str, member: Principal, add: bool) -> Result<()> {
        let group = group.to_string();
        let op = if add {
            GroupOp::AddMember { group, member }
        } else {
            GroupOp::RemoveMember { group, member }
        };
        self.change(Request::Group(op)).await
    }

    /// Every group and its direct members (administrators only).
    pub async fn groups(&self) -> Result<Vec<GroupInfo>> {
        match self
            .shared()
            .call(Request::Group(GroupOp::List), None)
            .await?
        {
            Response::Groups(g) => Ok(g),
            other => Err(ClientError::Protocol(unexpected("Groups", &other))),
        }
    }

    /// Enables or disables chat for a user, a site or everyone (administrators only); `None`
    /// clears a user's or site's setting so the next scope decides.
    pub async fn policy_set(&self, scope: PolicyScope, enabled: Option<bool>) -> Result<()> {
        self.change(Request::Policy(PolicyOp::Set { scope, enabled }))
            .await
    }

    /// How the chat policy resolves for `user` (administrators, or the user themself).
    pub async fn policy_show(&self, user: &str) -> Result<PolicyInfo> {
        let request = Request::Policy(PolicyOp::Show {
            user: user.to_string(),
        });
        match self.shared().call(request, None).await? {
            Response::Policy(p) => Ok(p),
            other => Err(ClientError::Protocol(unexpected("Policy", &other))),
        }
    }

    /// The cluster settings.
    pub async fn settings(&self) -> Result<ClusterSettings> {
        match self
            .shared()
            .call(Request::Config(ConfigOp::Show), None)
            .await?
        {
            Response::Settings(s) => Ok(s),
            other => Err(ClientError::Protocol(unexpected("Settings", &other))),
        }
    }

    /// Changes cluster settings (administrators only); answers the settings as the answering node
    /// has them after the change.
    pub async fn settings_set(&self, change: SettingsChange) -> Result<ClusterSettings> {
        match self
            .shared()
            .call(Request::Config(ConfigOp::Set(change)), None)
            .await?
        {
            Response::Settings(s) => Ok(s),
            other => Err(ClientError::Protocol(unexpected("Settings", &other))),
        }
    }

    /// Registers an add-in under a unique name (administrators only); `url` is http or https.
    pub async fn addin_register(&self, name: &str, url: &str) -> Result<()> {
        self.change(Request::AddIn(AddInOp::Register {
            name: name.to_string(),
            url: url.to_string(),
        }))
        .await
    }

    /// Changes an add-in's URL (administrators only).
    pub async fn addin_update(&self, name: &str, url: &str) -> Result<()> {
        self.change(Request::AddIn(AddInOp::Update {
            name: name.to_string(),
            url: url.to_string(),
        }))
        .await
    }

    /// Removes an add-in no room uses (administrators only).
    pub async fn addin_remove(&self, name: &str) -> Result<()> {
        self.change(Request::AddIn(AddInOp::Remove {
            name: name.to_string(),
        }))
        .await
    }

    /// Every registered add-in.
    pub async fn addins(&self) -> Result<Vec<AddInInfo>> {
        match self
            .shared()
            .call(Request::AddIn(AddInOp::List), None)
            .await?
        {
            Response::AddIns(a) => Ok(a),
            other => Err(ClientError::Protocol(unexpected("AddIns", &other))),
        }
    }
}
